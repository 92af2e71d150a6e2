"""The `full` baseline: training its dense delta is full fine-tuning of the wrapped layers."""

import copy

import torch
from torch import nn

import rankwise


def test_adam_on_the_delta_moves_the_layer_exactly_as_full_fine_tuning():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(12, 8, bias=False), nn.Tanh(), nn.Linear(8, 4, bias=False))
    model = copy.deepcopy(reference)
    rankwise.adapt(model, "full", targets="all-linear")  # no rank: ΔW is dense
    for p in reference.parameters():
        p.requires_grad_(True)
    full_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.0)
    delta_opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0
    )
    x, y = torch.randn(16, 12), torch.randn(16, 4)
    for _ in range(3):
        for net, opt in ((reference, full_opt), (model, delta_opt)):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    torch.testing.assert_close(model(x), reference(x))
    rankwise.merge(model)
    torch.testing.assert_close(model[0].weight, reference[0].weight)


def test_every_entry_of_every_targeted_weight_trains():
    model = nn.Sequential(nn.Linear(12, 8), nn.Linear(8, 4))
    rankwise.adapt(model, "full", targets="all-linear")  # no rank: ΔW is dense
    assert rankwise.trainable_parameters(model)["trainable"] == 12 * 8 + 8 * 4
