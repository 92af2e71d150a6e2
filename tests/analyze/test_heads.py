"""Head composition: factorized scores equal the d × d formulas, a planted channel ranks first."""

from __future__ import annotations

import pytest
import torch

from rankwise.analyze.heads import head_composition, head_weights
from rankwise.errors import ConfigError
from rankwise.models import load


def test_shapes_range_and_gqa_mapping():
    model, _ = load("tiny-llama")  # 2 layers, 4 query heads, 2 kv heads, hidden 64
    out = head_composition(model, top=5, progress=False)
    assert (out["layers"], out["heads"], out["kv_heads"]) == (2, 4, 2)
    for kind in ("q", "k", "v"):
        matrix = torch.tensor(out["scores"][kind])
        assert matrix.shape == (8, 8)
        assert torch.all(matrix[:4] == 0) and torch.all(matrix[4:, 4:] == 0)  # only later layers receive
        assert torch.all((matrix[4:, :4] > 0) & (matrix[4:, :4] <= 1))
    assert len(out["top"]) == 5
    assert [t["score"] for t in out["top"]] == sorted((t["score"] for t in out["top"]), reverse=True)
    weights = head_weights(model)
    k = model.model.layers[1].self_attn.k_proj.weight.reshape(2, 16, 64)
    assert torch.equal(weights[1]["K"][2], k[1]) and torch.equal(weights[1]["K"][1], k[0])


def test_scores_match_explicit_matrices():
    model, _ = load("tiny-llama")
    out = head_composition(model, top=1, progress=False)
    w = head_weights(model)
    s, r = 1, 2  # sender layer 0 head 1, receiver layer 1 head 2
    ov = w[0]["O"][s] @ w[0]["V"][s]
    qk = w[1]["Q"][r].T @ w[1]["K"][r]
    ov_r = w[1]["O"][r] @ w[1]["V"][r]

    def cs(a, b):
        return torch.linalg.matrix_norm(a @ b) / (torch.linalg.matrix_norm(a) * torch.linalg.matrix_norm(b))

    assert out["scores"]["q"][4 + r][s] == pytest.approx(float(cs(qk.T, ov)), rel=1e-4)
    assert out["scores"]["k"][4 + r][s] == pytest.approx(float(cs(qk, ov)), rel=1e-4)
    assert out["scores"]["v"][4 + r][s] == pytest.approx(float(cs(ov_r, ov)), rel=1e-4)


def test_planted_channel_ranks_first_and_is_one_component():
    model, _ = load("tiny-llama")
    w = head_weights(model)
    u = torch.linalg.svd(w[0]["O"][1] @ w[0]["V"][1]).U[:, 0]  # the sender's strongest written direction
    with torch.no_grad():  # receiver layer 1 head 2's queries read only that direction
        q = model.model.layers[1].self_attn.q_proj.weight
        q[32:48] = torch.outer(torch.randn(16, generator=torch.Generator().manual_seed(0)), u)
    out = head_composition(model, top=3, progress=False)
    first = out["top"][0]
    assert (first["sender"], first["receiver"], first["kind"]) == ([0, 1], [1, 2], "q")
    assert first["score"] > 2 * out["baseline"]
    assert first["channels"][0]["component"] == 0
    assert first["channels"][0]["share"] == pytest.approx(1.0, abs=1e-3)


def test_channel_shares_sum_to_one():
    model, _ = load("tiny-llama")
    top = head_composition(model, top=2, components=16, progress=False)["top"]
    for entry in top:
        assert sum(c["share"] for c in entry["channels"]) == pytest.approx(1.0, abs=1e-3)


def test_non_llama_model_and_bad_kind_rejected():
    with pytest.raises(ConfigError, match="Llama-style"):
        head_composition(torch.nn.Linear(2, 2), progress=False)
    model, _ = load("tiny-llama")
    with pytest.raises(ConfigError, match="unknown kinds"):
        head_composition(model, kinds=("x",), progress=False)
