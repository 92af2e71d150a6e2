"""SVD-LLM and ASVD: exact at full rank, SVD-LLM's output error is the dropped singular values of W S and
beats ASVD and plain SVD on the calibration data, ASVD matches its formula, and both load back."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.compress import LowRankLinear
from rankwise.compress.asvd import cholesky_whitening
from rankwise.errors import ConfigError
from rankwise.io import save_model
from rankwise.models import load

from ..conftest import TINY_VOCAB, make_tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _calibration(seed: int = 2) -> list[dict]:
    ids = torch.randint(0, TINY_VOCAB, (4, 32), generator=torch.Generator().manual_seed(seed))
    return [{"input_ids": ids[:2]}, {"input_ids": ids[2:]}]


def _inputs(tokens: int = 240, features: int = 24) -> torch.Tensor:
    """Correlated inputs whose channels differ in scale by two orders of magnitude, as LLM activations."""
    gen = torch.Generator().manual_seed(3)
    mixing = torch.randn(features, features, generator=gen) / features ** 0.5 + torch.eye(features)
    scales = torch.logspace(-1, 1, features)
    return (torch.randn(tokens, features, generator=gen) @ mixing) * scales


def _output_error(method: str, X: torch.Tensor, rank: int, **fields) -> tuple[torch.Tensor, nn.Linear]:
    torch.manual_seed(0)
    layer = nn.Linear(X.shape[1], 20)
    W = layer.weight.detach().double().clone()
    model = rankwise.compress(nn.Sequential(layer), method, rank=rank, calibration=[X[:120], X[120:]],
                              **fields)
    low = model[0]
    assert isinstance(low, LowRankLinear) and low.rank == rank
    return torch.linalg.matrix_norm((W - low.dense_weight().double()) @ X.double().T), W


@pytest.mark.parametrize("method", ["svd-llm", "asvd"])
def test_full_rank_reproduces_every_layer(method, tiny_ids):
    base = _logits(make_tiny_llama(), tiny_ids)
    model = rankwise.compress(make_tiny_llama(), method, rank=16, targets=["k_proj", "v_proj"],
                              calibration=_calibration())
    assert isinstance(model.model.layers[0].self_attn.k_proj, LowRankLinear)
    torch.testing.assert_close(_logits(model, tiny_ids), base, atol=1e-5, rtol=1e-5)


def test_svd_llm_output_error_is_the_dropped_singular_values_and_the_smallest():
    X, rank = _inputs(), 6
    error, W = _output_error("svd-llm", X, rank)
    N = X.shape[0]
    S = torch.linalg.cholesky(X.double().T @ X.double() / N)
    dropped = torch.linalg.svdvals(W @ S)[rank:]
    torch.testing.assert_close(error, dropped.square().sum().sqrt() * N ** 0.5, rtol=1e-6, atol=1e-8)
    asvd_error, _ = _output_error("asvd", X, rank)
    svd_error, _ = _output_error("svd", X, rank)
    assert error <= asvd_error * (1 + 1e-9) and error <= svd_error * (1 + 1e-9)
    assert error < 0.9 * svd_error  # on inputs this anisotropic, whitening wins by a margin


def test_asvd_follows_its_formula_with_mean_absolute_activations():
    X, rank = _inputs(), 6
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(X.shape[1], 20))
    W = model[0].weight.detach().double().clone()
    rankwise.compress(model, "asvd", rank=rank, alpha=0.5, calibration=[X[:120], X[120:]])
    s = X.double().abs().mean(0).sqrt()  # (mean |x_j|)^0.5 per input channel
    U, sigma, Vh = torch.linalg.svd(W * s, full_matrices=False)
    expected = (U[:, :rank] * sigma[:rank]) @ Vh[:rank] / s
    torch.testing.assert_close(model[0].dense_weight().double(), expected, rtol=1e-5, atol=1e-6)


def test_whitening_damps_only_a_singular_moment():
    X = _inputs(tokens=8, features=24)  # 8 tokens, 24 channels: C has rank 8
    C = X.double().T @ X.double() / 8
    with pytest.raises(RuntimeError):
        torch.linalg.cholesky(C)
    S = cholesky_whitening(C)
    assert torch.all(S.diagonal() > 0) and torch.allclose(S @ S.T, C, atol=1e-4 * C.diagonal().mean())
    definite = C + torch.eye(24, dtype=torch.float64)
    torch.testing.assert_close(cholesky_whitening(definite), torch.linalg.cholesky(definite))
    torch.manual_seed(0)
    layer = nn.Linear(24, 20)
    W = layer.weight.detach().clone()
    rankwise.compress(model := nn.Sequential(layer), "svd-llm", rank=20, calibration=[X])
    torch.testing.assert_close(model[0].dense_weight(), W, atol=1e-5, rtol=1e-5)  # full rank: still exact


def test_calibration_is_required():
    with pytest.raises(ConfigError, match="pass calibration="):
        rankwise.compress(make_tiny_llama(), "svd-llm", rank=4)
    with pytest.raises(ConfigError, match="alpha must be a positive number"):
        rankwise.compress(make_tiny_llama(), "asvd", rank=4, alpha=0, calibration=_calibration())


@pytest.mark.parametrize("method", ["svd-llm", "asvd"])
def test_a_compressed_model_folder_loads_back_factorized(method, tmp_path, tiny_ids, cache):
    model = rankwise.compress(make_tiny_llama(), method, ratio=0.5, rank_pattern={"down_proj": 8},
                              calibration=_calibration())
    expected = _logits(model, tiny_ids)
    save_model(model, tmp_path / "m")
    loaded, _ = load(str(tmp_path / "m"))
    down = loaded.model.layers[1].mlp.down_proj
    assert isinstance(down, LowRankLinear) and down.rank == 8
    assert loaded.model.layers[0].self_attn.q_proj.rank == int(0.5 * 32 * 32 / 64)
    assert torch.equal(_logits(loaded, tiny_ids), expected)
