"""LoRA-Squeeze: train at a higher rank, anneal to the target rank in place, finalize to a plain LoRA."""

import torch
from torch import nn

import rankwise
from rankwise.adapters import hooks, layers_of
from rankwise.adapters.lora import Lora

from ..conftest import make_tiny_llama


def _squeeze(**fields):
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(24, 20)), "lora-squeeze", **fields)
    adapter = model[0].adapters["default"]
    with torch.no_grad():
        adapter.lora_B.normal_()
    return model, adapter


def test_annealing_reaches_the_target_rank_and_finalize_gives_the_same_outputs():
    model, adapter = _squeeze(rank=2, source_rank=8, squeeze_start=0, squeeze_steps=6, squeeze_every=2)
    params_before = [id(p) for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, target = torch.randn(16, 24), torch.randn(16, 20)
    ranks = []
    for step in range(1, 9):
        ((model(x) - target) ** 2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        hooks.after_step(model, step)
        ranks.append(adapter.active_rank)
    assert ranks == [8, 6, 6, 4, 4, 2, 2, 2]  # linear in steps, every 2 steps, down to rank 2
    assert [id(p) for p in model.parameters() if p.requires_grad] == params_before  # the optimizer's tensors
    assert adapter.lora_A.shape == (8, 24)  # shapes kept; the dropped ranks are zero and masked
    assert adapter.rank_mask.tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert torch.linalg.matrix_rank(adapter.delta_weight()) == 2
    out = model(x)
    hooks.finalize(model)
    lora = model[0].adapters["default"]
    assert type(lora) is Lora and lora.lora_A.shape == (2, 24) and lora.lora_B.shape == (20, 2)
    torch.testing.assert_close(model(x), out, atol=1e-5, rtol=0)


def test_each_squeeze_keeps_the_best_approximation():
    _, adapter = _squeeze(rank=2, source_rank=6)
    dense = adapter.delta_weight().detach()
    U, S, Vh = torch.linalg.svd(dense)
    adapter.squeeze_to(3)
    torch.testing.assert_close(adapter.delta_weight(), (U[:, :3] * S[:3]) @ Vh[:3], atol=1e-5, rtol=0)
    torch.testing.assert_close(adapter.lora_B[:, :3].norm(dim=0), adapter.lora_A[:3].norm(dim=1))  # √Σ split


def test_finalize_before_annealing_is_post_squeeze_and_masked_ranks_do_not_leak():
    model, adapter = _squeeze(rank=3, source_rank=8, squeeze_start=10_000)
    x = torch.randn(4, 24)
    dense = adapter.delta_weight().detach()
    U, S, Vh = torch.linalg.svd(dense)
    lora = adapter.finalize()
    torch.testing.assert_close(lora.delta_weight(), (U[:, :3] * S[:3]) @ Vh[:3], atol=1e-5, rtol=0)
    adapter.squeeze_to(5)
    out = model(x)
    with torch.no_grad():  # what a stale optimizer moment might do to a dropped rank
        adapter.lora_A[6:].normal_()
        adapter.lora_B[:, 6:].normal_()
    torch.testing.assert_close(model(x), out)


def test_source_rank_defaults_to_twice_the_rank_capped_by_the_layer(tiny_ids):
    model = rankwise.adapt(make_tiny_llama(), "lora-squeeze", rank=4)
    shapes = {path: a.lora_A.shape[0] for path, a in layers_of(model, "default").items()}
    assert shapes["model.layers.0.self_attn.q_proj"] == 8
    wide = rankwise.adapt(make_tiny_llama(), "lora-squeeze", rank=4, source_rank=24)
    capped = {path: a.lora_A.shape[0] for path, a in layers_of(wide, "default").items()}
    assert capped["model.layers.0.self_attn.k_proj"] == 16 and capped["model.layers.0.mlp.up_proj"] == 24


def test_a_squeezed_adapter_and_its_final_lora_save_and_load(tiny_ids, tmp_path):
    from rankwise.io import load_adapter, save_adapter

    model = rankwise.adapt(make_tiny_llama(), "lora-squeeze", rank=2, source_rank=6, squeeze_steps=0)
    with torch.no_grad():
        for adapter in layers_of(model, "default").values():
            adapter.lora_B.normal_()
    hooks.after_step(model, 1)  # squeeze_steps=0: straight to the target rank
    assert {a.active_rank for a in layers_of(model, "default").values()} == {2}
    with torch.no_grad():
        expected = model(tiny_ids).logits
    save_adapter(model, tmp_path / "squeezed")
    reloaded = load_adapter(make_tiny_llama(), tmp_path / "squeezed")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(tiny_ids).logits, expected, atol=0, rtol=0)
    hooks.finalize(model)
    save_adapter(model, tmp_path / "final")
    loaded = load_adapter(make_tiny_llama(), tmp_path / "final")
    assert {type(a).name for a in layers_of(loaded, "default").values()} == {"lora"}
    with torch.no_grad():
        torch.testing.assert_close(loaded(tiny_ids).logits, expected, atol=1e-5, rtol=0)


def test_a_squeeze_resets_the_factors_optimizer_moments():
    from rankwise.adapters import StepContext

    model, adapter = _squeeze(rank=2, source_rank=8, squeeze_start=0, squeeze_steps=2, squeeze_every=1)
    optimizer = torch.optim.AdamW([adapter.lora_A, adapter.lora_B], lr=1e-2)
    x, target = torch.randn(16, 24), torch.randn(16, 20)
    ((model(x) - target) ** 2).mean().backward()
    optimizer.step()
    assert all(
        torch.count_nonzero(optimizer.state[p]["exp_avg"]) > 0 for p in (adapter.lora_A, adapter.lora_B)
    )
    hooks.after_step(model, StepContext(1, optimizer))  # squeezes 8 -> 5: A and B now hold another basis
    assert adapter.active_rank == 5
    for param in (adapter.lora_A, adapter.lora_B):
        assert torch.count_nonzero(optimizer.state[param]["exp_avg"]) == 0
        assert torch.count_nonzero(optimizer.state[param]["exp_avg_sq"]) == 0
