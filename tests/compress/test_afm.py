"""AFM: exact at k = out, the PCA error (the sum of the dropped eigenvalues) on its calibration data, never
worse than weight SVD there, a model folder that loads back, and the embedding version."""

import copy

import pytest
import torch
from torch import nn

import rankwise
from rankwise.compress import LowRankLinear
from rankwise.compress.afm import LowRankEmbedding
from rankwise.errors import ConfigError
from rankwise.io import save_model
from rankwise.models import load

from ..conftest import TINY_VOCAB, make_tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _calibration():
    generator = torch.Generator().manual_seed(2)
    return [torch.randint(0, TINY_VOCAB, (2, 8), generator=generator) for _ in range(4)]


def _correlated_inputs(count=400, width=24, seed=3):
    """Inputs with a decaying spectrum and an offset, so that centring and the data's shape both matter."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(width, width, generator=generator) * torch.logspace(0, -2, width)[:, None]
    return torch.randn(count, width, generator=generator) @ mixing + 0.5


def test_full_rank_reproduces_the_layer(tiny_ids):
    base = _logits(make_tiny_llama(), tiny_ids)
    model = rankwise.compress(make_tiny_llama(), "afm", rank=32, targets=["down_proj"],  # (32, 64)
                              calibration=_calibration())
    assert isinstance(model.model.layers[0].mlp.down_proj, LowRankLinear)
    torch.testing.assert_close(_logits(model, tiny_ids), base, atol=1e-5, rtol=1e-5)


def test_output_error_is_the_dropped_eigenvalues_and_beats_weight_svd():
    torch.manual_seed(0)
    layer = nn.Linear(24, 16)
    X = _correlated_inputs()
    with torch.no_grad():
        Y = layer(X).double()
    batches = list(X.split(100))
    afm = rankwise.compress(nn.Sequential(copy.deepcopy(layer)), "afm", rank=4, calibration=batches)
    svd = rankwise.compress(nn.Sequential(copy.deepcopy(layer)), "svd", rank=4)
    with torch.no_grad():
        afm_error = (afm(X).double() - Y).square().sum(1).mean()
        svd_error = (svd(X).double() - Y).square().sum(1).mean()
    dropped = torch.linalg.eigvalsh(torch.cov(Y.T, correction=0))[:-4].sum()  # ascending: all but the top 4
    torch.testing.assert_close(afm_error, dropped, rtol=1e-3, atol=1e-7)
    assert afm_error < svd_error
    assert sum(p.numel() for p in afm.parameters()) == sum(p.numel() for p in svd.parameters())


def test_the_folded_bias_matches_the_papers_two_layers():
    torch.manual_seed(1)
    layer = nn.Linear(12, 10)
    X = _correlated_inputs(200, 12)
    model = rankwise.compress(nn.Sequential(copy.deepcopy(layer)), "afm", rank=3, calibration=[X])
    with torch.no_grad():
        Y = layer(X)
        mean = Y.mean(0)
        U = torch.linalg.eigh(torch.cov(Y.T, correction=0))[1][:, -3:]
        expected = mean + (Y - mean) @ U @ U.T  # ŷ = μ + U_k U_kᵀ (y − μ)
        torch.testing.assert_close(model(X), expected, atol=1e-4, rtol=1e-4)


def test_a_compressed_model_folder_loads_back(tmp_path, tiny_ids, cache):
    model = rankwise.compress(make_tiny_llama(), "afm", rank=4, rank_pattern={r".*layers\.1.*": 8},
                              targets=["down_proj"], calibration=_calibration())
    expected = _logits(model, tiny_ids)
    save_model(model, tmp_path / "m")
    loaded, _ = load(str(tmp_path / "m"))
    down0, down1 = loaded.model.layers[0].mlp.down_proj, loaded.model.layers[1].mlp.down_proj
    assert isinstance(down1, LowRankLinear) and (down0.rank, down1.rank) == (4, 8)
    assert down0.bias is not None  # Llama's layer had none; AFM's folded bias holds (I − U_k U_kᵀ) μ
    assert torch.equal(_logits(loaded, tiny_ids), expected)


@pytest.mark.parametrize("fields, match", [
    ({"rank": 4, "svd_iters": 2}, "leave svd_iters at 0"),
    ({"rank": 4, "ratio": 0.5}, "afm takes exactly one of"),
    ({"rank": 33, "targets": ["down_proj"]}, r"down_proj: rank 33 exceeds min\(out, in\) = 32"),
])
def test_bad_settings_are_refused(fields, match):
    with pytest.raises(ConfigError, match=match):
        rankwise.compress(make_tiny_llama(), "afm", calibration=_calibration(), **fields)


def test_afm_needs_calibration():
    with pytest.raises(ConfigError, match="afm reads activations"):
        rankwise.compress(make_tiny_llama(), "afm", rank=4, targets=["down_proj"])


def test_the_embedding_version_is_exact_at_full_rank_and_pca_below():
    torch.manual_seed(4)
    embedding = nn.Embedding(30, 8)
    ids = torch.randint(0, 30, (500,)) % torch.randint(1, 30, (500,))  # skewed toward small ids
    full = LowRankEmbedding.from_afm(embedding, ids, rank=8)
    with torch.no_grad():
        torch.testing.assert_close(full(ids), embedding(ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(full.dense_table(), embedding.weight, atol=1e-5, rtol=1e-5)
        rows = embedding(ids).double()
        small = LowRankEmbedding.from_afm(embedding, ids, rank=3)
        error = (small(ids).double() - rows).square().sum(1).mean()
    dropped = torch.linalg.eigvalsh(torch.cov(rows.T, correction=0))[:-3].sum()
    torch.testing.assert_close(error, dropped, rtol=1e-4, atol=1e-7)
    assert sum(p.numel() for p in small.parameters()) == 30 * 3 + 8 * 3 + 8
