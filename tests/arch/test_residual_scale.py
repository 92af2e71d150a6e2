"""Depth-scaled residual branches: the residual expansion for linear branches, λ by depth, and the
residual-scale variant on a tiny Llama."""

from __future__ import annotations

import math

import pytest
import torch

from rankwise import arch
from rankwise.arch.residual_scale import ResidualScaleConfig, branch_scale, scaled_residual
from rankwise.errors import ConfigError
from rankwise.models import load


@pytest.mark.parametrize("scale", ["1", "1/sqrt(n)", "1/n"])
def test_linear_branches_give_the_product_of_identity_plus_scaled_maps(scale):
    generator = torch.Generator().manual_seed(0)
    width, depth = 6, 5
    maps = [torch.randn(width, width, generator=generator, dtype=torch.float64) / 3 for _ in range(depth)]
    x = torch.randn(4, width, generator=generator, dtype=torch.float64)
    lam = branch_scale(scale, depth)
    # Branch k acts after branches 1..k-1, so its factor multiplies from the left: (I+λA_n)···(I+λA_1) x.
    product = torch.eye(width, dtype=torch.float64)
    for a in maps:
        product = (torch.eye(width, dtype=torch.float64) + lam * a) @ product
    branches = [lambda h, a=a: h @ a.T for a in maps]
    torch.testing.assert_close(scaled_residual(x, branches, lam), x @ product.T)


def test_the_order_of_non_commuting_branches_matters():
    a = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    forward = scaled_residual(x, [lambda h: h @ a.T, lambda h: h @ b.T], 1.0)
    backward = scaled_residual(x, [lambda h: h @ b.T, lambda h: h @ a.T], 1.0)
    eye = torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(forward, x @ ((eye + b) @ (eye + a)).T)
    assert not torch.allclose(forward, backward)


@pytest.mark.parametrize(("depth", "expected"), [(1, (1.0, 1.0, 1.0)), (16, (1.0, 0.25, 1 / 16)),
                                                  (8, (1.0, 1 / math.sqrt(8), 0.125))])
def test_branch_scale_by_name(depth, expected):
    got = tuple(branch_scale(name, depth) for name in ("1", "1/sqrt(n)", "1/n"))
    assert got == pytest.approx(expected)


def test_branch_scale_takes_a_positive_number_whatever_the_depth():
    assert branch_scale(0.3, 64) == 0.3
    assert branch_scale(2, 5) == 2.0


@pytest.mark.parametrize("bad", ["1/m", "", 0, -1, 0.0, True, False, None, float("nan")])
def test_branch_scale_refuses(bad):
    with pytest.raises(ConfigError, match="scale"):
        branch_scale(bad, 4)


@pytest.mark.parametrize("values", [*ResidualScaleConfig.invalid, {"scale": -0.5}, {"scale": True},
                                    {"normalize": 1}, {"normalize": None}])
def test_config_refuses_invalid_values(values):
    with pytest.raises(ConfigError):
        ResidualScaleConfig(**values)


def test_config_refuses_an_unknown_field():
    with pytest.raises(ConfigError, match="lambda"):
        ResidualScaleConfig.create("residual-scale", **{"lambda": 0.5})


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(1))


def _logits(ids: torch.Tensor, **fields) -> torch.Tensor:
    model = load("tiny-llama")[0].eval()
    if fields:
        arch.apply(model, "residual-scale", **fields)
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def plain_logits(ids) -> torch.Tensor:
    return _logits(ids)


def test_scale_one_with_norms_is_the_plain_model(ids, plain_logits):
    torch.testing.assert_close(_logits(ids, scale="1"), plain_logits, atol=1e-6, rtol=0)


def test_scale_one_over_n_changes_the_output(ids, plain_logits):
    assert (_logits(ids, scale="1/n") - plain_logits).abs().max() > 1e-3


def test_removing_the_block_norms_runs_and_changes_the_output(ids):
    normalized, bare = _logits(ids, scale="1/n"), _logits(ids, scale="1/n", normalize=False)
    assert torch.isfinite(bare).all()
    assert (bare - normalized).abs().max() > 1e-3


def test_the_variant_matches_the_formula_on_one_block(ids):
    """Each wrapped block is h ← h + λ Attn(Norm₁ h), then h ← h + λ MLP(Norm₂ h), with λ = 1/(2L)."""
    model = arch.apply(load("tiny-llama")[0].eval(), "residual-scale", scale="1/n")
    lam = 1 / (2 * model.config.num_hidden_layers)
    seen = {}
    first = model.model.layers[0]
    handle = first.register_forward_hook(lambda m, args, out: seen.update(h=args[0], out=out))
    attn_in = {}
    attn_handle = first.base.self_attn.register_forward_hook(
        lambda m, args, kwargs, out: attn_in.update(kwargs=kwargs), with_kwargs=True)
    with torch.no_grad():
        model(input_ids=ids)
        handle.remove()
        attn_handle.remove()
        kwargs = {k: v for k, v in attn_in["kwargs"].items() if k != "hidden_states"}
        base, h = first.base, seen["h"]
        h = h + lam * base.self_attn(hidden_states=base.input_layernorm(h), **kwargs)[0]
        h = h + lam * base.mlp(base.post_attention_layernorm(h))
    out = seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"]
    torch.testing.assert_close(out, h)
