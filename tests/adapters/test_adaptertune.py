"""AdapterTune: a zero-initialised bottleneck after each block; identity at init, only the adapters train."""

import pytest
import torch
from torch import nn
from transformers import ViTConfig, ViTModel

import rankwise
from rankwise.adapters import AdaptedModule
from rankwise.errors import NotMergeable

from ..conftest import make_tiny_llama


def _tiny_vit():
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       image_size=16, patch_size=8, num_channels=3)
    return ViTModel(config, add_pooling_layer=False).eval()


def _train_one_step(model, loss_fn):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    loss_fn(model).backward()
    grads = {name: p.grad is not None for name, p in model.named_parameters()}
    optimizer.step()
    return grads


def test_identity_at_init_and_only_the_adapters_train_on_a_vit():
    model = _tiny_vit()
    pixels = torch.randn(2, 3, 16, 16)
    base = model(pixel_values=pixels).last_hidden_state.detach()
    rankwise.adapt(model, "adaptertune", rank=4)
    assert all(isinstance(model.layers[i], AdaptedModule) for i in range(2))
    torch.testing.assert_close(model(pixel_values=pixels).last_hidden_state, base, atol=0, rtol=0)

    grads = _train_one_step(model, lambda m: m(pixel_values=pixels).last_hidden_state.square().mean())
    trained = {name for name, has_grad in grads.items() if has_grad}
    assert trained == {f"layers.{i}.adapters.default.{p}.{t}"
                       for i in range(2) for p in ("down", "up") for t in ("weight", "bias")}
    assert not torch.allclose(model(pixel_values=pixels).last_hidden_state, base)
    counts = rankwise.trainable_parameters(model)
    assert counts["trainable"] == 2 * (2 * 32 * 4 + 4 + 32)  # 2·d·rank + rank + d per block


def test_update_is_alpha_times_the_bottleneck_of_the_block_output():
    block = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True).eval()
    model = nn.Sequential(block)
    x = torch.randn(3, 5, 16)
    rankwise.adapt(model, "adaptertune", rank=4, alpha=0.5, targets=["0"])
    adapter = model[0].adapters["default"]
    with torch.no_grad():
        adapter.up.weight.normal_()
        adapter.up.bias.normal_()
    h = block(x)
    expected = h + 0.5 * adapter.up(torch.nn.functional.gelu(adapter.down(h)))
    torch.testing.assert_close(model(x), expected)


class _TupleBlock(nn.Module):
    """A block that returns (hidden states, something else), as older transformers layers do."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        return self.proj(x), "extra"


def test_tuple_outputs_keep_their_tail():
    model = nn.Sequential(_TupleBlock())
    x = torch.randn(2, 3, 8)
    rankwise.adapt(model, "adaptertune", rank=2, targets=["0"])
    with torch.no_grad():
        model[0].adapters["default"].up.weight.fill_(0.1)
    hidden, extra = model[0](x)
    assert extra == "extra" and not torch.allclose(hidden, model[0].base(x)[0])


def test_decoder_blocks_are_the_default_targets_and_merging_is_refused():
    model = rankwise.adapt(make_tiny_llama(), "adaptertune", rank=4)
    assert [name for name, m in model.named_modules() if isinstance(m, AdaptedModule)] == [
        "model.layers.0", "model.layers.1"]
    with pytest.raises(NotMergeable):
        rankwise.merge(model)
    with pytest.raises(rankwise.errors.ConfigError, match=r"model\.layers\.0: rank 1000"):
        rankwise.adapt(make_tiny_llama(), "adaptertune", rank=1000)
    with pytest.raises(rankwise.errors.TargetError, match="all-blocks"):
        rankwise.adapt(make_tiny_llama(), "adaptertune", rank=4, targets=["q_proj"])
