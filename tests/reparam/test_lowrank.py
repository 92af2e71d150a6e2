"""Pure low-rank W = (α/r)·B A: the SVD init is the best rank-r approximation (exact at full rank), the
random init is nn.Linear's kaiming-uniform on both factors."""

import torch
from torch import nn

import rankwise
from rankwise.reparam import FactorizedLinear

from ..conftest import make_tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_svd_init_at_full_rank_reproduces_the_model(tiny_ids):
    base = _logits(make_tiny_llama(), tiny_ids)
    # Full rank everywhere: 32 for the (32, 32), (64, 32) and (32, 64) layers, 16 for k/v (16, 32).
    model = rankwise.reparametrize(make_tiny_llama(), "lowrank", rank=32, init="svd",
                                   rank_pattern={"k_proj": 16, "v_proj": 16})
    assert isinstance(model.model.layers[0].self_attn.k_proj, FactorizedLinear)
    torch.testing.assert_close(_logits(model, tiny_ids), base, atol=1e-5, rtol=1e-5)


def test_svd_init_below_full_rank_is_the_eckart_young_approximation():
    layer = nn.Linear(30, 20, bias=True)
    W, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    model = rankwise.reparametrize(nn.Sequential(layer), "lowrank", rank=5, init="svd", alpha=2.0)
    low = model[0]
    assert low.scale == 2.0 / 5
    S = torch.linalg.svdvals(W.double())
    error = torch.linalg.matrix_norm((low.dense_weight() - W).double())
    torch.testing.assert_close(error, S[5:].square().sum().sqrt(), rtol=1e-4, atol=1e-6)
    assert torch.equal(low.bias.detach(), bias)  # the layer's bias is kept


def test_random_init_is_kaiming_uniform_on_both_factors_with_the_alpha_over_r_scale():
    model = rankwise.reparametrize(nn.Sequential(nn.Linear(400, 300)), "lowrank", rank=50, alpha=32.0)
    low = model[0]
    assert low.scale == 32.0 / 50
    for factor, fan_in in ((low.A, 400), (low.B, 50)):
        bound = fan_in ** -0.5
        assert factor.abs().max() <= bound and factor.abs().max() > 0.98 * bound
        torch.testing.assert_close(factor.var().item(), bound ** 2 / 3, rtol=0.05, atol=0)  # U(±b): b²/3
    torch.testing.assert_close(low.dense_weight(), low.scale * low.B @ low.A)
