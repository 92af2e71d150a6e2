"""fsdp=true: two CPU processes (gloo) shard the model with FSDP2 and save the adapter a single
process saves on the same batches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rankwise.errors import ConfigError
from rankwise.io import save_adapter
from rankwise.train import train
from rankwise.train.sharding import block_classes

from .train_helpers import adapted_tiny_llama, synthetic_features, tiny_config

ROOT = Path(__file__).resolve().parents[2]


def sharding_config(out, method: str, **overrides):
    # No dropout: its masks are drawn per process, so two processes would not match one.
    values = dict(method=method, dropout=0.0, gradient_accumulation_steps=1, max_steps=3)
    return tiny_config(out, **values | overrides)


def fixed_batch() -> torch.Tensor:
    return torch.arange(1, 17).reshape(2, 8)


def test_fsdp_refuses_what_it_does_not_shard_yet(tmp_path):
    with pytest.raises(ConfigError, match="save_every=0"):
        tiny_config(tmp_path, fsdp=True, save_every=2)
    with pytest.raises(ConfigError, match="one task"):
        tiny_config(tmp_path, fsdp=True, task=["iso-dates", "iso-dates"])
    assert tiny_config(tmp_path, fsdp=True).fsdp


def test_one_process_trains_as_usual_and_says_fsdp_did_nothing(tmp_path):
    config = sharding_config(tmp_path, "lora", fsdp=True, max_steps=1)
    with pytest.warns(UserWarning, match="nothing to shard"):
        train(adapted_tiny_llama(config), synthetic_features(n=4), config, pad_token_id=0)


def test_a_model_without_block_classes_is_refused_by_name():
    with pytest.raises(ValueError, match="Sequential names no decoder block"):
        block_classes(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "dora"])
def test_two_sharded_processes_save_the_single_process_adapter(tmp_path, method):
    sharded = tmp_path / "fsdp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tests.train.fsdp_worker", str(sharded), method]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # Each process's optimizer held half of every trained tensor: the run was sharded, not replicated.
    for rank in (0, 1):
        held = json.loads((sharded / f"rank{rank}.json").read_text())
        assert held["kinds"] == ["DTensor"] and held["local"] < held["full"]

    # One process with the two processes' batches side by side (2 × 2 rows = 4 rows per step).
    single = tmp_path / "single"
    config = sharding_config(single, method, per_device_train_batch_size=4)
    model = adapted_tiny_llama(config)
    train(model, synthetic_features(n=16), config, pad_token_id=0)
    save_adapter(model, single / "adapter")
    expected, got = (load_file(folder / "adapter" / "adapter.safetensors") for folder in (single, sharded))
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    with torch.no_grad():
        logits = model(fixed_batch()).logits
    sharded_logits = load_file(sharded / "logits.safetensors")["logits"]
    torch.testing.assert_close(sharded_logits, logits, rtol=1e-5, atol=1e-5)
