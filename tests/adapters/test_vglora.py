"""VGLoRA (SplitFlux): a token gate mixes a high-rank and a low-rank LoRA branch."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters.vglora import saliency
from rankwise.errors import NotMergeable


def _vglora(**fields):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 12))
    rankwise.adapt(model, "vglora", rank=8, alpha=8, **fields)
    vg = model[0].adapters["default"]
    with torch.no_grad():
        vg.high_B.normal_()
        vg.low_B.normal_()
        vg.gate_weight.normal_()
    return model, vg


def _branch(model, vg, x, A, B, scale):
    return model[0].base(x) + scale * (x @ A.T) @ B.T


@pytest.mark.parametrize("bias, branch", [(60.0, "high"), (-60.0, "low")])
def test_a_saturated_gate_gives_one_branch_alone(bias, branch):
    model, vg = _vglora()
    x = torch.randn(2, 5, 20) * 0.1
    with torch.no_grad():
        vg.gate_bias.fill_(bias)
    if branch == "high":
        expected = _branch(model, vg, x, vg.high_A, vg.high_B, 8 / 8)
    else:
        expected = _branch(model, vg, x, vg.low_A, vg.low_B, 8 / 2)  # low_rank = rank // 4 = 2
    torch.testing.assert_close(model(x), expected)
    assert vg.low_A.shape == (2, 20) and vg.high_A.shape == (8, 20)


def test_the_gate_depends_on_the_token_so_merging_is_refused():
    model, vg = _vglora()
    x = torch.randn(4, 20)
    gate = vg.gate(x).squeeze(-1)
    assert gate.shape == (4,) and gate.std() > 0
    mixed = gate[:, None] * _branch(model, vg, x, vg.high_A, vg.high_B, 1.0) + (1 - gate[:, None]) * _branch(
        model, vg, x, vg.low_A, vg.low_B, 4.0)
    torch.testing.assert_close(model(x), mixed)
    with pytest.raises(NotMergeable):
        rankwise.merge(model)


def test_a_given_saliency_mask_replaces_the_learned_gate():
    model, vg = _vglora()
    x = torch.randn(2, 3, 20)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    high = _branch(model, vg, x, vg.high_A, vg.high_B, 1.0)
    low = _branch(model, vg, x, vg.low_A, vg.low_B, 4.0)
    with saliency(model, mask):
        torch.testing.assert_close(model(x), torch.where(mask[..., None].bool(), high, low))
    assert vg.saliency_mask is None


def test_complementary_term_penalises_shared_input_directions():
    _, vg = _vglora(complement_weight=1.0, low_rank=1)
    with torch.no_grad():
        vg.high_A.zero_()
        vg.high_A[0, 0] = 1.0
        vg.low_A.zero_()
        vg.low_A[0, 1] = 2.0
    assert float(vg.regularizer().detach()) == 0.0  # orthogonal reads
    with torch.no_grad():
        vg.low_A[0, 0] = 2.0
    assert float(vg.regularizer().detach()) == pytest.approx(0.5)  # cos² of 45°
    assert _vglora()[1].regularizer() is None  # off by default
