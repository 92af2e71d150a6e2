"""Full and Block AttnRes against the paper's formula and the official Block AttnRes pseudocode."""

from __future__ import annotations

import pytest
import torch

from rankwise import arch
from rankwise.arch.attnres import attend
from rankwise.errors import ConfigError

from .conftest import randomize_own


def test_attend_with_zero_query_is_the_mean_of_the_sources():
    sources = [torch.randn(2, 3, 8) for _ in range(5)]
    mixed = attend(sources, torch.zeros(8), torch.nn.RMSNorm(8))
    torch.testing.assert_close(mixed, torch.stack(sources).mean(0))


def test_attend_is_the_softmax_over_normalized_keys():
    sources, query, norm = [torch.randn(4, 8) for _ in range(3)], torch.randn(8), torch.nn.RMSNorm(8)
    weights = torch.stack([norm(v) @ query for v in sources]).softmax(0)
    expected = sum(w[:, None] * v for w, v in zip(weights, sources, strict=True))
    torch.testing.assert_close(attend(sources, query, norm), expected)


def _capture(model, ids):
    """Per block: the attention's output, the MLP's input (after AttnRes, before its norm), its output."""
    seen = {"attn": [], "mlp_in": [], "mlp": []}
    handles = []
    for layer in model.model.layers:
        attention = layer.base.self_attn
        handles.append(attention.register_forward_hook(lambda m, a, out: seen["attn"].append(out[0])))
        handles.append(layer.base.post_attention_layernorm.register_forward_hook(
            lambda m, args, out: seen["mlp_in"].append(args[0])))
        handles.append(layer.base.mlp.register_forward_hook(lambda m, a, out: seen["mlp"].append(out)))
    hidden = model.model(input_ids=ids).last_hidden_state
    for handle in handles:
        handle.remove()
    return seen, hidden


def test_full_attnres_at_init_feeds_each_sublayer_the_mean_of_its_sources(deep_llama, ids):
    arch.apply(deep_llama, "attnres-full")
    seen, _ = _capture(deep_llama, ids)
    values = [deep_llama.model.embed_tokens(ids)]
    for attended, mlp_input, fed in zip(seen["attn"], seen["mlp_in"], seen["mlp"]):
        values.append(attended)
        torch.testing.assert_close(mlp_input, torch.stack(values).mean(0))
        values.append(fed)


def test_full_attnres_with_trained_queries_matches_the_formula(deep_llama, ids):
    arch.apply(deep_llama, "attnres-full")
    randomize_own(deep_llama)
    seen, hidden = _capture(deep_llama, ids)
    layers = deep_llama.model.layers
    values = [deep_llama.model.embed_tokens(ids)]
    for index, layer in enumerate(layers):
        values.append(seen["attn"][index])
        torch.testing.assert_close(seen["mlp_in"][index], attend(values, layer.mlp_query, layer.mlp_key_norm))
        values.append(seen["mlp"][index])
    final = attend(values, layers[-1].exit_query, layers[-1].exit_key_norm)
    torch.testing.assert_close(hidden, deep_llama.model.norm(final))


def official_block_attn_res(embedding, attn, mlp, attn_proj, attn_norm, mlp_proj, mlp_norm, out_proj,
                            out_norm, layers_per_block):
    """The official Block AttnRes pseudocode, transcribed (0-based layer numbers; the boundary at layer 0,
    where there is no partial block yet, appends nothing)."""
    def block_attn_res(blocks, partial, proj, norm):
        values = torch.stack(blocks + ([partial] if partial is not None else []))
        logits = torch.einsum("d,nbtd->nbt", proj, norm(values))
        return torch.einsum("nbt,nbtd->btd", logits.softmax(0), values)

    blocks, partial = [embedding], None
    for layer in range(len(attn)):
        h = block_attn_res(blocks, partial, attn_proj[layer], attn_norm[layer])
        if layer % layers_per_block == 0 and partial is not None:
            blocks.append(partial)
            partial = None
        a = attn[layer](h)
        partial = a if partial is None else partial + a
        h = block_attn_res(blocks, partial, mlp_proj[layer], mlp_norm[layer])
        partial = partial + mlp[layer](h)
    return block_attn_res(blocks, partial, out_proj, out_norm)


@pytest.mark.parametrize("blocks", [1, 2, 4])
def test_block_attnres_follows_the_official_pseudocode(deep_llama, ids, blocks):
    arch.apply(deep_llama, "attnres-block", blocks=blocks)
    randomize_own(deep_llama)
    layers = list(deep_llama.model.layers)
    seen, hidden = _capture(deep_llama, ids)
    # The rankwise block computes the next attention's input at its end: block l's exit query is the
    # pseudocode's attention query of layer l + 1, and the last block's is the output's.
    attn = [lambda h, i=i: seen["attn"][i] for i in range(len(layers))]  # attention outputs as computed
    mlp = [lambda h, i=i: layers[i].feed_forward(h) for i in range(len(layers))]
    unused = torch.zeros_like(layers[0].exit_query)
    expected = official_block_attn_res(
        deep_llama.model.embed_tokens(ids), attn, mlp,
        [unused] + [layer.exit_query for layer in layers[:-1]],
        [layers[0].exit_key_norm] + [layer.exit_key_norm for layer in layers[:-1]],
        [layer.mlp_query for layer in layers], [layer.mlp_key_norm for layer in layers],
        layers[-1].exit_query, layers[-1].exit_key_norm, len(layers) // blocks)
    torch.testing.assert_close(hidden, deep_llama.model.norm(expected))


def test_attention_inputs_follow_the_pseudocode_too(deep_llama, ids):
    """Each attention reads the previous block's exit mix (the pseudocode's attention-side AttnRes)."""
    arch.apply(deep_llama, "attnres-block", blocks=2)
    randomize_own(deep_llama)
    inputs = []
    handles = [layer.base.input_layernorm.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
               for layer in deep_llama.model.layers]
    outputs = []
    handles += [layer.register_forward_hook(lambda m, a, out: outputs.append(out))
                for layer in deep_llama.model.layers]
    deep_llama(input_ids=ids)
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(inputs[0], deep_llama.model.embed_tokens(ids))
    for previous_exit, attention_input in zip(outputs[:-1], inputs[1:]):
        torch.testing.assert_close(attention_input, previous_exit)


def test_a_block_count_that_does_not_divide_the_depth_is_refused(deep_llama):
    with pytest.raises(ConfigError,
                       match=r"blocks=3 does not divide the model's 4 layers; use one of \[1, 2, 4\]"):
        arch.apply(deep_llama, "attnres-block", blocks=3)
    assert not arch.installed(deep_llama)
    with pytest.raises(ConfigError,
                       match="positive integer"):
        arch.apply(deep_llama, "attnres-block", blocks=0)


def test_attnres_adds_two_queries_and_two_norm_gains_per_block(deep_llama):
    before = sum(p.numel() for p in deep_llama.parameters())
    arch.apply(deep_llama, "attnres-full")
    added = sum(p.numel() for p in deep_llama.parameters()) - before
    assert added == 4 * 4 * 32  # 4 blocks × (2 queries + 2 gains) × d, i.e. 2d per sublayer


@pytest.mark.parametrize(("variant", "fields"), [("attnres-full", {}), ("attnres-block", {"blocks": 2})])
def test_the_stream_holds_no_tensors_after_a_forward(deep_llama, ids, variant, fields):
    arch.apply(deep_llama, variant, **fields)
    deep_llama(input_ids=ids).logits.sum().backward()
    stream = deep_llama.model.layers[0].stream
    assert stream.sources == [] and stream.partial is None
