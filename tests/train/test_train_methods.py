"""Every registered method through rankwise's own loop: it trains, checkpoints, and resumes bitwise."""

import shutil
from pathlib import Path

import pytest
import torch

from rankwise import ADAPTERS
from rankwise.train import resolve_resume, train

from .train_helpers import adapted_tiny_llama, adapter_tensors, synthetic_features, tiny_config

FEATURES = synthetic_features(n=8)


def run(output_dir, method, resume=False):
    # rank, dropout and targets left to the method (block-level methods target "all-blocks")
    config = tiny_config(output_dir, method=method, rank=None, dropout=None, max_steps=2, save_every=1,
                         per_device_train_batch_size=2, gradient_accumulation_steps=1, warmup_steps=0,
                         init_batches=1)
    model = adapted_tiny_llama(config)
    before = adapter_tensors(model)
    train(model, FEATURES, config, pad_token_id=0,
          resume_from=resolve_resume("latest", output_dir) if resume else None)
    return before, adapter_tensors(model)


@pytest.mark.parametrize("method", ADAPTERS.names())
def test_method_trains_and_resumes_bitwise(tmp_path, method):
    before, reference = run(tmp_path / "ref", method)
    first = Path("checkpoints") / "step-000001"
    shutil.copytree(tmp_path / "ref" / first, tmp_path / "cut" / first)
    _, resumed = run(tmp_path / "cut", method, resume=True)
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    # finalize may swap an adapter for another kind (SoRA -> LoRA); otherwise something must have trained
    if before.keys() == reference.keys():
        assert any(not torch.equal(before[k], reference[k]) for k in before)
