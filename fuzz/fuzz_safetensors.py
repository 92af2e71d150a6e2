"""Fuzz rankwise.io.readers.load_tensors(path), the one safetensors reader behind every weights file.

Input: the bytes of a .safetensors file. Seeds: adapter, optimizer, RNG and PEFT files rankwise and PEFT
wrote (fuzz/make_seeds.py).
"""

import sys

import atheris
import numpy  # noqa: F401 - heavy dependencies first, so that only rankwise is instrumented
import safetensors  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

with atheris.instrument_imports(include=["rankwise"]):
    import rankwise  # noqa: F401
    from rankwise.io.readers import load_tensors

from _common import guarded, work_dir  # noqa: E402

PATH = work_dir("safetensors") / "weights.safetensors"


@atheris.instrument_func  # its mode branches count as coverage too
def TestOneInput(data: bytes) -> None:
    PATH.write_bytes(data)
    guarded(load_tensors, PATH)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
