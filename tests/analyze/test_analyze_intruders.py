"""Intruder dimensions: none for identical weights, a planted orthogonal direction is found; compare()."""

import copy

import pytest
import torch

import rankwise
from rankwise.analyze import compare, intruder_dimensions
from rankwise.errors import ConfigError
from tests.conftest import make_tiny_llama


def test_identical_matrices_have_no_intruders():
    W = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
    out = intruder_dimensions(W, W.clone())
    assert out["count"] == 0 and out["intruders"] == []
    assert out["similarities"] == pytest.approx([1.0] * 10, abs=1e-4) and out["spectrum_shift"] == 0.0


def test_planted_rank1_direction_orthogonal_to_top_base_directions_is_an_intruder():
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(48, 32, generator=g) / 32 ** 0.5
    U, S, _ = torch.linalg.svd(W0, full_matrices=False)
    # u ⟂ all 32 base left singular vectors (the base spans only 32 of the 48 output dims), so its
    # cosine with every base direction is ~0; a large σ puts it at the top of W_ft's spectrum.
    u = torch.randn(48, generator=g)
    u = u - U @ (U.T @ u)
    u = u / u.norm()
    v = torch.randn(32, generator=g)
    W1 = W0 + 10 * S[0] * torch.outer(u, v / v.norm())
    out = intruder_dimensions(W0, W1, k=10, threshold=0.5)
    assert out["intruders"][:1] == [0] and out["count"] >= 1
    assert out["similarities"][0] < 0.1 and out["spectrum_shift"] > 1


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ConfigError, match="shapes"):
        intruder_dimensions(torch.zeros(4, 3), torch.zeros(3, 4))


def test_compare_loads_and_merges_an_adapter_folder(tmp_path):
    base = make_tiny_llama()
    tuned = rankwise.adapt(copy.deepcopy(base), "lora", rank=1, alpha=2, targets=["q_proj", "v_proj"])
    with torch.no_grad():  # a "trained" rank-1 update large enough to dominate the spectrum
        for _name, p in tuned.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 3.0)
    rankwise.save_adapter(tuned, tmp_path / "adapter")
    result = compare(base, tmp_path / "adapter", k=4, progress=False)
    by_type = result["by_type"]
    # v_proj is 16 × 32: its base singular vectors span all of R^16, so any direction has
    # max |cos| ≥ 1/4 with them and may stay above ε; the 32-wide q_proj still shows intruders.
    assert by_type["q_proj"]["intruders"] >= 1
    assert by_type["q_proj"]["mean_spectrum_shift"] > 0.1 and by_type["v_proj"]["mean_spectrum_shift"] > 0.1
    assert by_type["k_proj"]["intruders"] == 0 and by_type["k_proj"]["mean_spectrum_shift"] == 0.0
    assert result["total_intruders"] == sum(v["intruders"] for v in by_type.values())
    assert compare(base, copy.deepcopy(base), progress=False)["total_intruders"] == 0
