"""Run by test_train_distributed as `torchrun --nproc_per_node 2 -m tests.train.ddp_worker OUT [RESUME_DIR]`.

Trains the tiny Llama data-parallel (gloo on CPU) and writes each process's final adapter tensors to
OUT/rank<r>.safetensors, so the test can check that the processes agree.
"""

import os
import sys

from safetensors.torch import save_file

from rankwise.train import resolve_resume, train

from ..conftest import leave_process_group
from .train_helpers import adapted_tiny_llama, adapter_tensors, synthetic_features, tiny_config


def main(out: str, resume_dir: str | None = None) -> None:
    config = tiny_config(out, max_steps=4, save_every=2, per_device_train_batch_size=2)
    model = adapted_tiny_llama(config)
    start = resolve_resume("latest", resume_dir) if resume_dir else None
    train(model, synthetic_features(n=16), config, pad_token_id=0, resume_from=start)
    save_file(adapter_tensors(model), os.path.join(out, f"rank{os.environ['RANK']}.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:])
    leave_process_group()
