"""ReLoRA y = W_base x + s·B(A x) + b: unchanged at init, only A and B train (W_base is a frozen buffer);
a restart merges s·B A into W_base without changing the model, redraws A from (seed, restart, layer),
zeroes B and prunes 99 % of their moments by magnitude; restarts accumulate an update of rank > r; the
jagged cosine multiplier has the documented shape; saved models load back identically."""

import math

import pytest
import torch
import torch.nn.functional as F

import rankwise
from rankwise.errors import ConfigError
from rankwise.io import save_model
from rankwise.models import load
from rankwise.reparam import ReloraSchedule
from rankwise.reparam.base import kaiming_uniform, round_generator
from rankwise.reparam.relora import ReloraLinear, jagged_cosine

from ..conftest import make_tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")
Q_PROJ = "model.layers.0.self_attn.q_proj"


def _relora_llama(**fields):
    return rankwise.reparametrize(make_tiny_llama(), "relora", **{"rank": 4, **fields})


def _relora_layers(model):
    return {path: m for path, m in model.named_modules() if isinstance(m, ReloraLinear)}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _train(model, ids, optimizer, steps, schedule=None, first=1):
    for step in range(first, first + steps):
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if schedule is not None:
            schedule.after_step(step, optimizer)


def test_the_model_is_unchanged_at_init_and_only_A_and_B_train(tiny_ids):
    dense = make_tiny_llama()
    model = _relora_llama()
    assert torch.equal(_logits(model, tiny_ids), _logits(dense, tiny_ids))  # B = 0 exactly
    layers = _relora_layers(model)
    assert len(layers) == 14
    for path, layer in layers.items():
        assert set(dict(layer.named_parameters())) == {"A", "B"}  # Llama's linears have no bias
        assert set(dict(layer.named_buffers())) == {"base_weight"}  # W_base: saved, never trained
        assert torch.equal(layer.base_weight, dense.get_submodule(path).weight)
        assert not layer.B.any() and layer.A.abs().max() <= layer.in_features ** -0.5
    frozen = {path: layer.base_weight.clone() for path, layer in layers.items()}
    factors = {path: (layer.A.detach().clone(), layer.B.detach().clone()) for path, layer in layers.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    _train(model, tiny_ids, optimizer, steps=3)
    generator = torch.Generator().manual_seed(2)
    for path, layer in layers.items():
        assert torch.equal(layer.base_weight, frozen[path])
        assert not torch.equal(layer.A, factors[path][0]) and layer.B.any()
        x = torch.randn(3, layer.in_features, generator=generator)
        with torch.no_grad():  # the layer is the linear map of W = W_base + s·B A
            expected = F.linear(x, frozen[path] + layer.scale * layer.B @ layer.A)
            torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-5)


def test_a_restart_merges_without_changing_the_model_and_resets_the_factors_and_their_state(tiny_ids):
    model = _relora_llama(reset_every=3, seed=7)
    layers = _relora_layers(model)
    schedule = ReloraSchedule(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, tiny_ids, optimizer, steps=3)  # steps 1, 2, 3 without the schedule
    before = _logits(model, tiny_ids)
    merged = {path: (m.base_weight + m.scale * m.B @ m.A).detach() for path, m in layers.items()}
    moments = {p: {k: v.clone() for k, v in optimizer.state[p].items()}
               for m in layers.values() for p in (m.A, m.B)}
    embedding = model.model.embed_tokens.weight
    embedding_state = optimizer.state[embedding]["exp_avg"].clone()

    assert schedule.after_step(2, optimizer) == ()
    assert schedule.after_step(3, optimizer) == ("merge", "reinit", "prune")

    torch.testing.assert_close(_logits(model, tiny_ids), before, atol=1e-5, rtol=1e-5)
    for path, layer in layers.items():
        torch.testing.assert_close(layer.base_weight, merged[path], atol=1e-6, rtol=1e-6)
        assert not layer.B.any()
        redrawn = kaiming_uniform(tuple(layer.A.shape), round_generator(7, 1, path))  # restart 1
        assert torch.equal(layer.A.detach(), redrawn)
        for param in (layer.A, layer.B):
            state = optimizer.state[param]
            assert int(state["step"]) == 3  # kept: the paper prunes the moments, not the step count
            for key in ("exp_avg", "exp_avg_sq"):
                old = moments[param][key]
                kept = old.numel() - round(0.99 * old.numel())
                largest = old.abs().flatten().sort(descending=True).values[kept - 1]
                assert torch.equal(state[key], torch.where(old.abs() >= largest, old, 0.0))
                assert torch.count_nonzero(state[key]) == kept
    assert torch.equal(optimizer.state[embedding]["exp_avg"], embedding_state)  # other state untouched


def test_a_full_reset_forgets_the_factors_state_only(tiny_ids):
    model = _relora_llama(reset_every=2, prune_ratio=None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, tiny_ids, optimizer, steps=1)
    model(tiny_ids, labels=tiny_ids).loss.backward()
    optimizer.step()
    assert ReloraSchedule(model).after_step(2, optimizer) == ("merge", "reinit", "reset")
    factors = {p for m in _relora_layers(model).values() for p in (m.A, m.B)}
    assert not factors & set(optimizer.state)
    assert model.model.embed_tokens.weight in optimizer.state


def test_restarts_accumulate_an_update_of_rank_above_r(tiny_ids):
    rank = 2
    model = _relora_llama(rank=rank, reset_every=2)
    layer = _relora_layers(model)[Q_PROJ]  # (32, 32)
    start = layer.base_weight.clone()
    schedule = ReloraSchedule(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def update_rank():
        singular = torch.linalg.svdvals(layer.base_weight - start)
        return int((singular > 1e-4 * singular[0]).sum())

    _train(model, tiny_ids, optimizer, steps=2, schedule=schedule)  # one restart
    assert update_rank() == rank  # one merged update: rank r
    _train(model, tiny_ids, optimizer, steps=2, schedule=schedule, first=3)  # a second restart
    assert update_rank() == 2 * rank > rank  # two rank-r updates in different subspaces


def test_restarts_are_seeded_by_seed_restart_and_layer_only(tiny_ids):
    def restarted_factors(global_seed, restarts=1):
        model = _relora_llama(reset_every=1, seed=3)
        torch.manual_seed(global_seed)  # the global RNG must not matter
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        _train(model, tiny_ids, optimizer, steps=restarts, schedule=ReloraSchedule(model))
        return {path: m.A.detach().clone() for path, m in _relora_layers(model).items()}

    first, again, later = restarted_factors(0), restarted_factors(1), restarted_factors(0, restarts=2)
    assert all(torch.equal(first[path], again[path]) for path in first)
    assert not any(torch.equal(first[path], later[path]) for path in first)
    assert not torch.equal(first[Q_PROJ], first["model.layers.0.self_attn.o_proj"])  # both (32, 32)


def test_a_trained_and_restarted_model_saves_and_loads_to_the_same_outputs(tmp_path, tiny_ids):
    model = _relora_llama(reset_every=2, rank_pattern={"down_proj": 2})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, tiny_ids, optimizer, steps=3, schedule=ReloraSchedule(model))  # a restart, then a step
    expected = _logits(model, tiny_ids)
    save_model(model, tmp_path / "m")
    loaded, _ = load(str(tmp_path / "m"))
    torch.testing.assert_close(_logits(loaded, tiny_ids), expected, atol=0, rtol=0)
    layer, original = _relora_layers(loaded)[Q_PROJ], _relora_layers(model)[Q_PROJ]
    assert torch.equal(layer.base_weight, original.base_weight) and layer.B.any()
    assert ReloraSchedule(loaded).reset_every == 2 and loaded.model.layers[1].mlp.down_proj.rank == 2


def test_the_jagged_cosine_multiplier_has_the_documented_shape():
    settings = {"total_steps": 1000, "restart_every": 200, "warmup_steps": 50, "restart_warmup_steps": 20}
    lr = [jagged_cosine(step, **settings) for step in range(1201)]

    def cosine(step):  # decay to 0.1 over steps 50 to 1000
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 50) / 950))

    assert lr[0] == 0 and lr[25] == 0.5 and lr[50] == 1.0  # linear warmup
    assert all(lr[s] > lr[s + 1] for s in range(50, 199))  # cosine decay until the first restart
    for restart in (200, 400, 600, 800):
        assert lr[restart] == 0 < lr[restart - 1]  # the jag: zero right after each restart
        assert lr[restart + 10] == pytest.approx(0.5 * cosine(restart + 20))  # linear re-warmup ...
        assert lr[restart + 20] == pytest.approx(cosine(restart + 20))  # ... back onto the cosine
        assert all(lr[s] < lr[s + 1] for s in range(restart, restart + 19))
    assert lr[999] == pytest.approx(0.1, abs=1e-5) and lr[1000] == 0  # the end; restarts go on after it
    assert lr[1010] == pytest.approx(0.05) and lr[1020] == lr[1199] == pytest.approx(0.1)  # min_lr_ratio

    model = _relora_llama(reset_every=200)
    optimizer = torch.optim.SGD(model.parameters(), lr=2.0)
    multiplier = ReloraSchedule(model).lr_lambda(total_steps=1000, warmup_steps=50, restart_warmup_steps=20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    for _ in range(200):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0  # the first step after the restart at step 200
    with pytest.raises(ConfigError, match="warmup_steps <= restart_every"):
        ReloraSchedule(model).lr_lambda(total_steps=1000, warmup_steps=500)


@pytest.mark.parametrize("fields, match", [
    ({"rank": 17, "targets": ["k_proj"]}, r"model\.layers\.0\.self_attn\.k_proj: rank 17 exceeds min\(out"),
    ({"reset_every": 0}, "reset_every must be a positive integer"),
    ({"prune_ratio": 1.0}, r"prune_ratio must be in \(0, 1\)"),
    ({"alpha": -1}, "alpha must be a positive number"),
    ({"density": 0.1}, "relora does not use density"),
])
def test_bad_settings_are_clear_errors(fields, match):
    with pytest.raises(ConfigError, match=match):
        _relora_llama(**fields)


def test_the_schedule_refuses_other_methods_and_a_missing_optimizer():
    with pytest.raises(ConfigError, match="is lowrank, not relora"):
        ReloraSchedule(rankwise.reparametrize(make_tiny_llama(), "lowrank", rank=4))
    with pytest.raises(ConfigError, match="no parameterization named 'default'"):
        ReloraSchedule(make_tiny_llama())
    schedule = ReloraSchedule(_relora_llama(reset_every=5))
    assert schedule.after_step(4) == ()
    with pytest.raises(ConfigError, match="restart is due at step 5 but no optimizer"):
        schedule.after_step(5)
