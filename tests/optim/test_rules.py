"""The shared update rules: Adafactor step for step against transformers' Adafactor (as GaLore's scripts
configure it), its factored state, and projected Adafactor in the basis' coordinates."""

import pytest
import torch
from transformers.optimization import Adafactor

from rankwise.optim import build_optimizer, memory_report
from rankwise.optim.projected import ProjectedAdafactor
from rankwise.optim.projectors import project, svd_basis
from rankwise.optim.rules import adafactor_update


def _reference(params, lr, weight_decay):
    return Adafactor(params, lr=lr, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                     weight_decay=weight_decay, relative_step=False, scale_parameter=False, warmup_init=False)


@pytest.mark.parametrize("shape", [(6, 4), (5,)])
def test_adafactor_matches_transformers(shape):
    torch.manual_seed(0)
    ours, theirs = torch.randn(shape), None
    theirs = torch.nn.Parameter(ours.clone())
    reference, state = _reference([theirs], lr=0.05, weight_decay=0.1), {}
    for _ in range(6):
        grad = torch.randn(shape)
        theirs.grad = grad.clone()
        reference.step()
        adafactor_update(ours, grad, state, lr=0.05, weight_decay=0.1)
    assert torch.allclose(ours, theirs.detach(), atol=1e-6, rtol=0)
    if len(shape) == 2:  # factored: a + b numbers instead of a·b
        assert state["exp_avg_sq_row"].shape == (6,) and state["exp_avg_sq_col"].shape == (4,)


def test_projected_adafactor_moves_the_coordinates_as_adafactor_on_the_projected_gradient():
    torch.manual_seed(1)
    weight, grad = torch.randn(8, 5), torch.randn(8, 5)
    basis = svd_basis(grad, 2)  # fixed: one refresh, at the first step
    param = torch.nn.Parameter(weight.clone())
    optimizer = ProjectedAdafactor([{"params": [param], "rank": 2, "update_interval": 100, "scale": 1.0}],
                                   lr=0.1)
    coordinates, state = project(weight, basis), {}
    for step in range(4):
        g = grad if step == 0 else torch.randn(8, 5)
        param.grad = g
        optimizer.step()
        adafactor_update(coordinates, project(g, basis), state, lr=0.1, weight_decay=0.0)
    assert torch.allclose(project(param.detach(), basis), coordinates, atol=1e-6)


def test_the_update_option_and_the_memory_formula():
    layer = torch.nn.Linear(16, 12)
    optimizer = build_optimizer("galore", [{"params": list(layer.parameters())}], lr=0.01, rank=3,
                                update="adafactor")
    assert isinstance(optimizer, ProjectedAdafactor)
    layer(torch.randn(4, 16)).sum().backward()
    optimizer.step()
    report = memory_report(layer, optimizer)
    assert report["optimizer"]["total"] == report["expected"]["total"]
    assert report["optimizer"]["moments"]["elements"] == (3 + 16) + 12  # (3×16) factored, and the bias
    with pytest.raises(Exception, match="unknown update rule 'lion'"):
        build_optimizer("dct", [{"params": list(layer.parameters())}], lr=0.01, update="lion")
