"""Resume determinism: an interrupted-and-resumed run ends bitwise equal to an uninterrupted one (CPU)."""

import json

import pytest
import torch

from rankwise.adapters import hooks
from rankwise.errors import ConfigError
from rankwise.train import list_checkpoints, resolve_resume, train

from .train_helpers import adapted_tiny_llama, adapter_tensors, synthetic_features, tiny_config

FEATURES = synthetic_features(n=10)


class Crash(Exception):
    pass


def crash_at(monkeypatch, step: int) -> None:
    """Make the run die right after optimizer step `step` (before its log line and checkpoint)."""
    real = hooks.after_step

    def after_step(model, s):
        real(model, s)
        if s.step == step:
            raise Crash(f"simulated crash at step {s}")

    monkeypatch.setattr(hooks, "after_step", after_step)


def run(output_dir, resume=False, **overrides):
    config = tiny_config(output_dir, **overrides)
    model = adapted_tiny_llama(config)
    start = resolve_resume("latest", output_dir) if resume else None
    summary = train(model, FEATURES, config, pad_token_id=0, resume_from=start)
    return model, summary


def log_of(output_dir):
    """The log's records without their wall time, which no rerun reproduces."""
    records = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in record.items() if k != "seconds"} for record in records]


@pytest.mark.parametrize("crash_step", [3, 5])
def test_resumed_run_is_bitwise_equal_to_uninterrupted(tmp_path, monkeypatch, crash_step):
    reference, _ = run(tmp_path / "ref", save_every=2)
    with monkeypatch.context() as patch:
        crash_at(patch, crash_step)
        with pytest.raises(Crash):
            run(tmp_path / "cut", save_every=2)
    latest = resolve_resume("latest", tmp_path / "cut")
    assert latest.name == f"step-{crash_step - crash_step % 2:06d}"
    resumed, summary = run(tmp_path / "cut", resume=True, save_every=2)

    assert summary["step"] == 6
    ref, res = adapter_tensors(reference), adapter_tensors(resumed)
    assert ref.keys() == res.keys()
    assert all(torch.equal(ref[k], res[k]) for k in ref)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in ref.items() if k.endswith("lora_B"))
    assert log_of(tmp_path / "cut") == log_of(tmp_path / "ref")  # losses and learning rates too


def test_chained_resumes_still_match(tmp_path, monkeypatch):
    reference, _ = run(tmp_path / "ref", save_every=1)
    for step in (2, 4):
        with monkeypatch.context() as patch:
            crash_at(patch, step + 1)
            with pytest.raises(Crash):
                run(tmp_path / "cut", resume=True, save_every=1)
    resumed, _ = run(tmp_path / "cut", resume=True, save_every=1)
    ref, res = adapter_tensors(reference), adapter_tensors(resumed)
    assert all(torch.equal(ref[k], res[k]) for k in ref)


def test_resume_latest_without_checkpoints_starts_fresh(tmp_path):
    assert resolve_resume("latest", tmp_path) is None


def test_resume_under_changed_settings_is_refused(tmp_path):
    run(tmp_path, save_every=3)
    with pytest.raises(ConfigError, match="per_device_train_batch_size: checkpoint 3, now 2"):
        run(tmp_path, resume=True, save_every=3, per_device_train_batch_size=2)


def test_rotation_keeps_the_newest(tmp_path):
    run(tmp_path, save_every=1, save_total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000005", "step-000006"]


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    # Equal-length rows with equal label counts: the mean of micro-batch means is the big batch's mean.
    split, _ = run(tmp_path / "a", per_device_train_batch_size=2, gradient_accumulation_steps=2, dropout=0.0)
    whole, _ = run(tmp_path / "b", per_device_train_batch_size=4, gradient_accumulation_steps=1, dropout=0.0)
    a, b = adapter_tensors(split), adapter_tensors(whole)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_hooks_are_called_as_documented(tmp_path, monkeypatch):
    calls = {"init": [], "reg": 0, "after": [], "final": 0}
    monkeypatch.setattr(hooks, "init_from_data", lambda m, batches: calls["init"].append(len(list(batches))))
    monkeypatch.setattr(hooks, "after_step", lambda m, step: calls["after"].append(
        (step.step, step.total_steps, step.optimizer is not None, step.scheduler is not None,
         step.group_lrs)))
    monkeypatch.setattr(hooks, "finalize", lambda m: calls.__setitem__("final", calls["final"] + 1))

    def regularizer(model):
        calls["reg"] += 1
        return sum(p.pow(2).sum() for p in model.parameters() if p.requires_grad) * 1e-3

    monkeypatch.setattr(hooks, "regularizer", regularizer)
    _, summary = run(tmp_path, max_steps=3)
    after = calls.pop("after")
    assert calls == {"init": [2], "reg": 6, "final": 1}  # 3 steps x 2 micro-batches
    assert [call[:4] for call in after] == [(s, 3, True, True) for s in (1, 2, 3)]
    assert all("regularizer" in record for record in summary["log"])


def test_a_torn_last_log_line_is_dropped_and_the_run_resumes(tmp_path, monkeypatch):
    reference, _ = run(tmp_path / "ref", save_every=2)
    with monkeypatch.context() as patch:
        crash_at(patch, 5)
        with pytest.raises(Crash):
            run(tmp_path / "cut", save_every=2)
    with open(tmp_path / "cut" / "log.jsonl", "a", encoding="utf-8") as log:
        log.write('{"step": 5, "loss": 0.12')  # killed in the middle of an append
    with pytest.warns(UserWarning, match="torn last line"):
        resumed, _ = run(tmp_path / "cut", resume=True, save_every=2)
    assert log_of(tmp_path / "cut") == log_of(tmp_path / "ref")
    ref, res = adapter_tensors(reference), adapter_tensors(resumed)
    assert all(torch.equal(ref[k], res[k]) for k in ref)


def test_a_bad_line_inside_the_log_is_named(tmp_path):
    run(tmp_path, save_every=2, max_steps=4)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    lines[1] = "not json"
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"log.jsonl:2: not a log record"):
        run(tmp_path, resume=True, save_every=2, max_steps=6)


def test_resume_latest_refuses_when_every_checkpoint_is_damaged_and_deletes_nothing(tmp_path):
    from rankwise.errors import AdapterFileError

    run(tmp_path, save_every=2, max_steps=4)
    damaged = list_checkpoints(tmp_path)
    for path in damaged:
        with open(path / "optimizer.safetensors", "r+b") as handle:
            handle.seek(-1, 2)
            handle.write(b"\x01")
    log_before = (tmp_path / "log.jsonl").read_bytes()
    with pytest.raises(AdapterFileError, match="every checkpoint .* is damaged.*step-000004.*step-000002"):
        resolve_resume("latest", tmp_path)
    assert [p.exists() for p in damaged] == [True, True]
    assert (tmp_path / "log.jsonl").read_bytes() == log_before


def test_a_diverged_run_stops_and_saves_nothing_over_good_work(tmp_path):
    from rankwise.errors import TrainingDiverged
    from rankwise.io import load_tensors

    run(tmp_path, save_every=2, max_steps=2)
    good = (tmp_path / "checkpoints" / "step-000002" / "adapter" / "adapter.safetensors").read_bytes()
    with pytest.raises(TrainingDiverged, match="Lower learning_rate"):
        run(tmp_path / "wild", save_every=1, learning_rate=1e30, max_grad_norm=0.0)
    for path in list_checkpoints(tmp_path / "wild"):  # what was saved before it diverged is finite
        tensors, _ = load_tensors(path / "adapter" / "adapter.safetensors")
        assert all(torch.isfinite(t).all() for t in tensors.values()), path
    assert (tmp_path / "checkpoints" / "step-000002" / "adapter" / "adapter.safetensors").read_bytes() == good


def test_a_damaged_checkpoint_is_never_written_over_nor_rotated_away(tmp_path):
    run(tmp_path, save_every=2, max_steps=4, save_total_limit=None)
    damaged = tmp_path / "checkpoints" / "step-000004"
    with open(damaged / "optimizer.safetensors", "r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\x01")
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        run(tmp_path, resume=True, save_every=2, max_steps=6, save_total_limit=1)  # resumes from step 2
    kept = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert "step-000006" in kept and any(name.startswith("step-000004.damaged-") for name in kept)
