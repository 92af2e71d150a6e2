"""LoRRA (Wings): zero-init low-rank residual attention learners beside each block, mixed by a router."""

import pytest
import torch
from transformers import ViTConfig, ViTModel

import rankwise
from rankwise.adapters import AdaptedModule
from rankwise.errors import ConfigError, NotMergeable

from ..conftest import TINY_VOCAB, make_tiny_llama


def _perturb(model):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.3 * torch.randn(param.shape, generator=gen))


def test_identity_at_init_and_router_weights_are_a_distribution(tiny_ids):
    model = make_tiny_llama()
    with torch.no_grad():
        base = model(tiny_ids).logits
    rankwise.adapt(model, "lorra", rank=4)
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_ids).logits, base, atol=0, rtol=0)
    lorra = model.model.layers[0].adapters["default"]
    assert lorra.heads == 4 and lorra.causal and len(lorra.learners) == 2
    _perturb(model)
    weights = lorra.route(torch.randn(3, 7, 32))
    assert weights.shape == (3, 7, 2) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 7))


@pytest.mark.parametrize("normalize_input", [True, False])
def test_update_is_the_router_weighted_sum_of_the_learners(normalize_input):
    model = make_tiny_llama()
    rankwise.adapt(model, "lorra", rank=4, branches=3, normalize_input=normalize_input)
    _perturb(model)
    layer = model.model.layers[0]
    lorra = layer.adapters["default"]
    h = 30 * torch.randn(2, 5, 32)  # a residual stream far from unit scale
    position_embeddings = model.model.rotary_emb(h, torch.arange(5)[None])
    block_out = layer.base(h, position_embeddings=position_embeddings)
    # By default the learners read what the block's attention reads: its input norm's output.
    read = layer.base.input_layernorm(h) if normalize_input else h
    weights = lorra.route(read)
    expected = block_out + sum(
        weights[..., i:i + 1] * learner(read, read, True, 0.0) for i, learner in enumerate(lorra.learners)
    )
    torch.testing.assert_close(layer(h, position_embeddings=position_embeddings), expected)


def test_learners_are_causal_in_a_decoder():
    model = make_tiny_llama()
    rankwise.adapt(model, "lorra", rank=4)
    _perturb(model)
    ids = torch.randint(0, TINY_VOCAB, (1, 8), generator=torch.Generator().manual_seed(3))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % TINY_VOCAB  # a different last token must not move earlier positions
    with torch.no_grad():
        torch.testing.assert_close(
            model(changed).logits[:, :-1], model(ids).logits[:, :-1], atol=1e-6, rtol=0
        )


def test_works_on_a_vit_block_and_is_not_causal_there():
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       image_size=16, patch_size=8)
    model = ViTModel(config, add_pooling_layer=False).eval()
    pixels = torch.randn(2, 3, 16, 16)
    base = model(pixel_values=pixels).last_hidden_state.detach()
    rankwise.adapt(model, "lorra", rank=4)
    assert isinstance(model.layers[0], AdaptedModule)
    lorra = model.layers[0].adapters["default"]
    assert lorra.heads == 4 and not lorra.causal
    torch.testing.assert_close(model(pixel_values=pixels).last_hidden_state, base, atol=0, rtol=0)
    model(pixel_values=pixels).last_hidden_state.square().mean().backward()
    assert all(p.grad is not None for p in lorra.parameters())
    assert all(p.grad is None for n, p in model.named_parameters() if ".adapters." not in n)


def test_block_level_errors():
    model = rankwise.adapt(make_tiny_llama(), "lorra", rank=4)
    with pytest.raises(NotMergeable):
        rankwise.merge(model)
    with pytest.raises(ConfigError, match=r"model\.layers\.0: rank 1000"):
        rankwise.adapt(make_tiny_llama(), "lorra", rank=1000)
    with pytest.raises(ConfigError, match="divisible"):
        rankwise.adapt(make_tiny_llama(), "lorra", rank=4, heads=5)
    with pytest.raises(ConfigError, match="normalize_input true or false, got None and 'maybe'"):
        rankwise.adapt(make_tiny_llama(), "lorra", rank=4, normalize_input="maybe")
