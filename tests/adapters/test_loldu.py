"""LoLDU: W's pivoted LDU factors stay frozen; only the diagonal (and its scale) train."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import layers_of
from rankwise.linalg.structured import ldu

from ..conftest import make_tiny_llama


@pytest.mark.parametrize("shape", [(16, 16), (12, 20), (20, 12)])
def test_ldu_reproduces_w(shape):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    factors = ldu(W)
    torch.testing.assert_close(factors.to_dense(), W, atol=1e-5, rtol=0)


def test_reproduces_the_base_at_init_and_trains_r_plus_one_numbers(tiny_ids):
    rank = 4
    base = make_tiny_llama()
    model = rankwise.adapt(make_tiny_llama(), "loldu", rank=rank)
    layers = layers_of(model, "default")
    assert rankwise.trainable_parameters(model)["trainable"] == (rank + 1) * len(layers)
    for path, adapter in layers.items():
        W = base.get_submodule(path).weight
        assert torch.count_nonzero(adapter.delta_weight()) == 0
        torch.testing.assert_close(adapter.merged_weight(W), W, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_ids).logits, base(tiny_ids).logits, atol=1e-5, rtol=0)
    code = rankwise.adapt(make_tiny_llama(), "loldu", rank=rank, train_scale=False)  # the authors' code
    assert rankwise.trainable_parameters(code)["trainable"] == rank * len(layers)


def test_update_is_p_l_diag_u_on_the_leading_ldu_factors():
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(20, 12)), "loldu", rank=3, alpha=6)
    layer, adapter = model[0], model[0].adapters["default"]
    W = layer.weight.detach().clone()
    factors = ldu(W)
    torch.testing.assert_close(adapter.init_diagonal, factors.D[:3])
    assert adapter.init_scale.item() == pytest.approx(2.0)
    with torch.no_grad():
        adapter.diagonal.mul_(1.7)
        adapter.scale.fill_(2.5)
    gains = 2.5 * 1.7 * factors.D[:3] - 2.0 * factors.D[:3]
    P = torch.eye(12)[factors.rows]  # the permutation as a matrix, for the check only
    expected = P @ factors.L[:, :3] @ torch.diag(gains) @ factors.U[:3]
    torch.testing.assert_close(adapter.delta_weight(), expected, atol=1e-5, rtol=0)
    x = torch.randn(4, 20)
    torch.testing.assert_close(model(x), x @ (W + expected).T + layer.bias, atol=1e-5, rtol=0)
    assert torch.equal(layer.weight, W)  # the residual is computed on the fly
