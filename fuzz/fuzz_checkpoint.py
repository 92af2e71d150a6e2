"""Fuzz rankwise.train.checkpoint.read_checkpoint(folder) on a real 2-step checkpoint (fuzz/seeds/checkpoint,
written by rankwise.train.train with save_every=1; see fuzz/make_seeds.py).

Input: the first byte picks the mode, the rest is the fuzzed file.
    0: the rest replaces trainer_state.json; manifest.json's entry for it is rewritten to the fuzzed
       file's size and sha256 (else verify_checkpoint rejects every input before the state is read)
    1: the rest replaces manifest.json
"""

import hashlib
import json
import shutil
import sys

import atheris
import numpy  # noqa: F401 - heavy dependencies first, so that only rankwise is instrumented
import safetensors  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

with atheris.instrument_imports(include=["rankwise"]):
    import rankwise  # noqa: F401
    from rankwise.train.checkpoint import read_checkpoint

from _common import SEEDS, guarded, mode_and_payload, work_dir  # noqa: E402

DIR = work_dir("checkpoint") / "step-000002"
shutil.copytree(SEEDS / "checkpoint", DIR, dirs_exist_ok=True)
MANIFEST = json.loads((SEEDS / "checkpoint" / "manifest.json").read_text())
STATE = (SEEDS / "checkpoint" / "trainer_state.json").read_bytes()
MANIFEST_BYTES = (SEEDS / "checkpoint" / "manifest.json").read_bytes()


@atheris.instrument_func  # its mode branches count as coverage too
def TestOneInput(data: bytes) -> None:
    mode, payload = mode_and_payload(data, 2)
    if mode == 0:
        manifest = json.loads(json.dumps(MANIFEST))
        manifest["files"]["trainer_state.json"] = {
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        (DIR / "trainer_state.json").write_bytes(payload)
        (DIR / "manifest.json").write_text(json.dumps(manifest))
    else:
        (DIR / "trainer_state.json").write_bytes(STATE)
        (DIR / "manifest.json").write_bytes(payload)
    guarded(read_checkpoint, DIR)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
