"""The loop's precision, gradient checkpointing and trackers: bf16 autocast keeps the adapter in fp32,
checkpointing changes no number, report_to writes the tracker's logs, bad values fail before training."""

from __future__ import annotations

import pytest
import torch

from rankwise.errors import ConfigError
from rankwise.train.loop import train

from .train_helpers import adapted_tiny_llama, adapter_tensors, synthetic_features, tiny_config


def _run(tmp_path, name: str, **overrides):
    config = tiny_config(tmp_path / name, max_steps=3, **overrides)
    model = adapted_tiny_llama(config)
    result = train(model, synthetic_features(), config, pad_token_id=0)
    return model, result


def test_bf16_autocasts_the_forward_and_keeps_the_adapter_fp32(tmp_path):
    model, bf16 = _run(tmp_path, "bf16", precision="bf16")
    assert all(t.dtype == torch.float32 for t in adapter_tensors(model).values())
    _, fp32 = _run(tmp_path, "fp32")
    losses = [r["loss"] for r in bf16["log"]], [r["loss"] for r in fp32["log"]]
    assert losses[0] != losses[1]  # the forward really ran in bf16 ...
    assert losses[0] == pytest.approx(losses[1], rel=0.05)  # ... and still trains the same model


def test_gradient_checkpointing_changes_no_number(tmp_path):
    plain, _ = _run(tmp_path, "plain")
    checkpointed, _ = _run(tmp_path, "checkpointed", gradient_checkpointing=True)
    assert not checkpointed.is_gradient_checkpointing  # switched off again after training
    expected = adapter_tensors(plain)
    for key, value in adapter_tensors(checkpointed).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)


def test_tensorboard_receives_every_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(tmp_path, "tracked", report_to="tensorboard")
    events = list((tmp_path / "tracked").rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("loss")] == [1, 2, 3]


@pytest.mark.parametrize(("overrides", "words"), [
    ({"precision": "int8"}, "precision must be one of fp32, bf16, fp16"),
    ({"report_to": "comet"}, "is not a tracker"),
    ({"report_to": ["tensorboard", 3]}, "report_to must be"),
])
def test_bad_settings_fail_at_construction(tmp_path, overrides, words):
    with pytest.raises(ConfigError, match=words):
        tiny_config(tmp_path, **overrides)


def test_fp16_on_a_cpu_points_at_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="use precision=bf16 on CPU"):
        tiny_config(tmp_path, precision="fp16")
