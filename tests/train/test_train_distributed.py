"""Data-parallel training under torchrun: two CPU processes (gloo) end with identical adapters."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def torchrun(*args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tests.train.ddp_worker", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_agree_and_resume_matches(tmp_path):
    full = tmp_path / "full"
    torchrun(str(full))
    ranks = [load_file(full / f"rank{r}.safetensors") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    assert any(v.abs().sum() > 0 for k, v in ranks[0].items() if k.endswith("lora_B"))
    assert len((full / "log.jsonl").read_text().splitlines()) == 4  # only the main process logs
    rng = load_file(full / "checkpoints" / "step-000002" / "rng.safetensors")
    assert {"rank0.torch", "rank1.torch"} <= set(rng)
    state = json.loads((full / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["fingerprint"]["world_size"] == 2

    # Resume both processes from the step-2 checkpoint in a fresh folder: same result as the full run.
    resumed = tmp_path / "resumed"
    shutil.copytree(full / "checkpoints" / "step-000002", resumed / "checkpoints" / "step-000002")
    torchrun(str(resumed), str(resumed))
    again = load_file(resumed / "rank0.safetensors")
    assert all(torch.equal(again[k], ranks[0][k]) for k in again)
