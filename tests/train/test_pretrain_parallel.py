"""`pretrain` under torchrun: two data-parallel CPU processes end with identical tensors, through GaLore's
basis refreshes and SST's rounds (re-SVD, resampling, state reset), and match one process that sees
both processes' batches at once (GaLore; SST's tensors are only defined up to the signs of its singular
vector pairs, which a re-SVD of a gradient-averaged weight may choose either way).

Also runnable as the worker: torchrun --nproc_per_node 2 -m tests.train.test_pretrain_parallel OUT
"""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rankwise.io.model_folder import base_state
from rankwise.train.pretrain import pretrain
from rankwise.train.trainee import ModelTrainee

from ..conftest import leave_process_group, run_two_processes

CASES = {"galore": {"rank": 4, "method_config": {"update_interval": 2}},
         "sst": {"rank": 4, "method_config": {"round_length": 2}}}
FAST = {"max_length": 32, "eval_blocks": 2, "progress": False, "warmup_steps": 1, "warmup_ratio": 0.0,
        "max_steps": 5}


def trained_tensors(out: Path, method: str, batch: int) -> dict[str, torch.Tensor]:
    """Run pretrain and return the model's final tensors (the model is caught as the trainee gets it)."""
    caught = []
    original = ModelTrainee.__init__

    def catch(self, model, *args, **kwargs):
        caught.append(model)
        original(self, model, *args, **kwargs)

    ModelTrainee.__init__ = catch
    try:
        pretrain({**FAST, **CASES[method], "method": method, "per_device_train_batch_size": batch,
                  "output_dir": str(out)})
    finally:
        ModelTrainee.__init__ = original
    return {k: v.detach().clone().contiguous() for k, v in base_state(caught[0], []).items()}


def test_two_processes_stay_in_step(tmp_path):
    run_two_processes("tests.train.test_pretrain_parallel", tmp_path)
    for method in CASES:
        ranks = [load_file(tmp_path / method / f"rank{r}.safetensors") for r in (0, 1)]
        assert ranks[0].keys() == ranks[1].keys()
        assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0]), method
    single = trained_tensors(tmp_path / "galore-single", "galore", batch=4)
    ranks = load_file(tmp_path / "galore" / "rank0.safetensors")
    assert max((single[k] - ranks[k]).abs().max().item() for k in single) <= 1e-5


def _worker(out: str) -> None:
    torch.set_num_threads(1)
    for method in CASES:
        tensors = trained_tensors(Path(out) / method, method, batch=2)
        save_file(tensors, os.path.join(out, method, f"rank{os.environ['RANK']}.safetensors"))


if __name__ == "__main__":
    _worker(*sys.argv[1:])
    leave_process_group()
