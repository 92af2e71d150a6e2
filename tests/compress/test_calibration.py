"""Calibration statistics: exact moments of each layer's inputs and outputs, measured once per shared
input, and the forward stopped once every layer has seen the batch."""

import torch

from rankwise.compress.calibration import collect_stats

from ..conftest import TINY_VOCAB, make_tiny_llama


def test_moments_equal_a_direct_computation_and_the_head_never_runs():
    model = make_tiny_llama()
    paths = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
             "model.layers.1.mlp.down_proj"]
    batches = [torch.randint(0, TINY_VOCAB, (2, 8), generator=torch.Generator().manual_seed(s))
               for s in (1, 2)]
    seen = {path: [] for path in paths}
    hooks = [model.get_submodule(p).register_forward_hook(
        lambda m, args, out, p=p: seen[p].append((args[0].reshape(-1, args[0].shape[-1]),
                                                  out.reshape(-1, out.shape[-1])))) for p in paths]
    with torch.no_grad():
        for ids in batches:
            model(ids)
    for hook in hooks:
        hook.remove()
    head_calls = []
    model.lm_head.register_forward_hook(lambda *_: head_calls.append(1))
    stats = collect_stats(model, paths, [{"input_ids": ids} for ids in batches], outputs=True, progress=False)
    assert head_calls == []  # every planned layer had its batch before the head
    for path in paths:
        x = torch.cat([x for x, _ in seen[path]]).double()
        y = torch.cat([y for _, y in seen[path]]).double()
        assert stats[path].count == len(x) == 32  # 2 batches of 2 × 8 tokens
        torch.testing.assert_close(stats[path].input_moment, x.T @ x / len(x))
        torch.testing.assert_close(stats[path].input_abs_mean, x.abs().mean(0))
        torch.testing.assert_close(stats[path].output_mean, y.mean(0))
        torch.testing.assert_close(stats[path].output_moment, y.T @ y / len(y))
