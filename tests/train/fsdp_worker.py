"""Run by test_sharding as `torchrun --nproc_per_node 2 -m tests.train.fsdp_worker OUT METHOD`.

Trains the tiny Llama with fsdp=true (gloo on CPU). Rank 0 then saves the adapter and, alone, the
logits of a fixed batch and generates; every rank records how much of each trained tensor its optimizer holds.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

from rankwise.io import save_adapter
from rankwise.train import train

from ..conftest import leave_process_group
from .test_sharding import fixed_batch, sharding_config
from .train_helpers import adapted_tiny_llama, synthetic_features


def main(out: str, method: str) -> None:
    config = sharding_config(out, method, per_device_train_batch_size=2, fsdp=True)
    model = adapted_tiny_llama(config)
    trained = train(model, synthetic_features(n=16), config, pad_token_id=0)
    params = [p for group in trained["optimizer"].param_groups for p in group["params"]]
    held = {"local": sum(p.to_local().numel() for p in params), "full": sum(p.numel() for p in params),
            "kinds": sorted({type(p).__name__ for p in params})}
    rank = int(os.environ["RANK"])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(held, fh)
    if rank == 0:  # one process alone, as finetune's evaluation and saving run
        save_adapter(model, os.path.join(out, "adapter"))
        with torch.no_grad():
            save_file({"logits": model(fixed_batch()).logits}, os.path.join(out, "logits.safetensors"))
            # generate waits for the other processes at each token if the model still looks sharded
            model.generate(fixed_batch(), max_new_tokens=2, do_sample=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
    leave_process_group()
