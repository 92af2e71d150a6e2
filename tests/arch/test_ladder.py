"""Ladder Residual: each module's output joins the stream one module later."""

from __future__ import annotations

import copy

import pytest
import torch

from rankwise import arch
from rankwise.arch.ladder import ladder_step
from rankwise.errors import ConfigError


def _outputs(model, ids):
    """Every block's attention and MLP outputs, kept in the graph."""
    seen = {"attn": [], "mlp": []}
    handles = []
    for layer in model.model.layers:
        attention = layer.base.self_attn
        handles.append(attention.register_forward_hook(lambda m, a, out: seen["attn"].append(out[0])))
        handles.append(layer.base.mlp.register_forward_hook(lambda m, a, out: seen["mlp"].append(out)))
    model(input_ids=ids)
    for handle in handles:
        handle.remove()
    return seen


def test_attention_does_not_depend_on_the_previous_mlp_output(deep_llama, ids):
    arch.apply(deep_llama, "ladder")
    seen = _outputs(deep_llama, ids)
    for i in range(1, len(deep_llama.model.layers)):
        later_attn, earlier_mlp, earlier_attn = seen["attn"][i], seen["mlp"][i - 1], seen["attn"][i - 1]
        no_path, = torch.autograd.grad(later_attn.sum(), earlier_mlp, retain_graph=True, allow_unused=True)
        assert no_path is None  # a_i is computed before m_{i-1} joins the stream
        path, = torch.autograd.grad(later_attn.sum(), earlier_attn, retain_graph=True)
        assert path.abs().sum() > 0  # ... but after a_{i-1} does
        mlp_path, = torch.autograd.grad(seen["mlp"][i].sum(), later_attn, retain_graph=True,
                                        allow_unused=True)
        assert mlp_path is None  # m_i never sees a_i


def test_the_ladder_without_its_delay_is_the_standard_block(deep_llama, ids):
    plain = copy.deepcopy(deep_llama)
    arch.apply(deep_llama, "ladder")
    hidden = deep_llama.model.embed_tokens(ids)
    positions = torch.arange(ids.shape[1])[None]
    kwargs = {"position_embeddings": deep_llama.model.rotary_emb(hidden, positions), "attention_mask": None,
              "position_ids": positions}
    for wrapped, standard in zip(deep_llama.model.layers, plain.model.layers):
        undelayed, pending = ladder_step(hidden, None, lambda h, w=wrapped: w.attention(h, kwargs),
                                         wrapped.feed_forward, delay=False)
        assert pending is None
        torch.testing.assert_close(undelayed, standard(hidden, **kwargs))
        hidden = undelayed


def test_ladder_step_adds_the_previous_outputs_one_module_late():
    r, a_prev, m_prev = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    attention, feed_forward = (lambda h: 2 * h), (lambda h: h ** 2)
    stream, (attended, fed) = ladder_step(r, (a_prev, m_prev), attention, feed_forward)
    torch.testing.assert_close(attended, 2 * (r + a_prev))
    torch.testing.assert_close(fed, (r + a_prev + m_prev) ** 2)
    torch.testing.assert_close(stream, r + a_prev + m_prev)


def test_converting_the_upper_blocks_leaves_the_lower_ones_standard(deep_llama, ids):
    plain = copy.deepcopy(deep_llama)
    arch.apply(deep_llama, "ladder", upper=2)
    def block_outputs(model):
        outs = []
        handles = [layer.register_forward_hook(lambda m, a, out: outs.append(out))
                   for layer in model.model.layers]
        logits = model(input_ids=ids).logits
        for handle in handles:
            handle.remove()
        return outs, logits

    converted, converted_logits = block_outputs(deep_llama)
    standard, standard_logits = block_outputs(plain)
    for index in range(2):
        torch.testing.assert_close(converted[index], standard[index])
    assert (converted_logits - standard_logits).abs().max() > 1e-4  # the upper two do change the output
    assert deep_llama.model.layers[2].first == 2


def test_the_last_converted_block_flushes_its_outputs(deep_llama, ids):
    """With one converted block nothing is pending when it starts, and it adds both of its outputs, the MLP's
    computed without the attention's: h + Attn(Norm₁ h) + MLP(Norm₂ h)."""
    arch.apply(deep_llama, "ladder", upper=1)
    last = deep_llama.model.layers[-1]
    inputs = []
    handle = last.register_forward_pre_hook(lambda m, args, kwargs: inputs.append((args, kwargs)),
                                            with_kwargs=True)
    hidden = deep_llama.model(input_ids=ids).last_hidden_state
    handle.remove()
    (h,), kwargs = inputs[0]
    expected = h + last.attention(h, kwargs) + last.feed_forward(h)
    torch.testing.assert_close(hidden, deep_llama.model.norm(expected))


def test_more_upper_blocks_than_the_model_has_is_refused(deep_llama):
    with pytest.raises(ConfigError, match="upper=5 is more than the model's 4 blocks"):
        arch.apply(deep_llama, "ladder", upper=5)
    with pytest.raises(ConfigError, match="positive number of blocks"):
        arch.apply(deep_llama, "ladder", upper=0)
    assert not arch.installed(deep_llama)


def test_ladder_generates_with_a_cache(deep_llama, ids):
    arch.apply(deep_llama, "ladder")
    cached = deep_llama.generate(ids[:1, :4], max_new_tokens=4, do_sample=False)
    uncached = deep_llama.generate(ids[:1, :4], max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
