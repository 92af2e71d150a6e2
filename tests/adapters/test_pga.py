"""PGA: a zero gate leaves the frozen model exact; the update reads the cues; cues must fit the batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rankwise
from rankwise.adapters import layers_of
from rankwise.adapters.pga import set_cues
from rankwise.errors import ConfigError

from ..conftest import make_tiny_llama


def test_the_update_is_the_gated_product_over_input_and_cues(tiny_ids):
    model = rankwise.adapt(make_tiny_llama(), "pga", rank=2, alpha=4, cue_features=3, targets=["q_proj"])
    cues = torch.randn(*tiny_ids.shape, 3, generator=torch.Generator().manual_seed(0))
    plain = model(input_ids=tiny_ids).logits
    set_cues(model, cues)
    torch.testing.assert_close(model(input_ids=tiny_ids).logits, plain)  # gate 0: the frozen model exactly
    layer = next(iter(layers_of(model, "default").values()))
    with torch.no_grad():
        layer.gate.fill_(0.7)
    x, base_out = torch.randn(2, 8, 32), torch.randn(2, 8, 32)
    layer.cues = cues
    expected = base_out + 0.7 * 2.0 * F.linear(torch.cat([x, cues], -1) @ layer.lora_A.T, layer.lora_B)
    torch.testing.assert_close(layer(x, base_out, None), expected)
    with_cues = model(input_ids=tiny_ids).logits
    set_cues(model, None)
    assert (model(input_ids=tiny_ids).logits - with_cues).abs().max() > 1e-4  # the cues drive the update


def test_the_gate_gets_the_first_gradient(tiny_ids):
    model = rankwise.adapt(make_tiny_llama(), "pga", rank=2, targets=["q_proj", "v_proj"])
    set_cues(model, torch.randn(*tiny_ids.shape, 3))
    model(input_ids=tiny_ids, labels=tiny_ids).loss.backward()
    layer = next(iter(layers_of(model, "default").values()))
    assert layer.gate.grad.abs() > 0 and layer.lora_A.grad.abs().max() == 0  # A, B move once g does


def test_cues_of_the_wrong_shape_or_no_pga_layers_are_refused(tiny_ids):
    model = rankwise.adapt(make_tiny_llama(), "pga", rank=2, targets=["q_proj"])
    set_cues(model, torch.randn(1, 3, 3))
    with pytest.raises(ConfigError, match=r"the cues are shaped \(1, 3, 3\), but this layer's input needs"):
        model(input_ids=tiny_ids)
    with pytest.raises(ConfigError, match="adapter 'default' has no PGA layers"):
        set_cues(rankwise.adapt(make_tiny_llama(), "lora", rank=2), None)
