"""Fuzz rankwise.data.load_examples(path) on .jsonl and .csv files.

Input: first byte even -> the rest is written as data.jsonl, odd -> as data.csv.
"""

import sys

import atheris
import numpy  # noqa: F401 - heavy dependencies first, so that only rankwise is instrumented
import safetensors  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

with atheris.instrument_imports(include=["rankwise"]):
    import rankwise  # noqa: F401
    from rankwise.data import load_examples

from _common import guarded, mode_and_payload, work_dir  # noqa: E402

DIR = work_dir("loaders")
PATHS = (DIR / "data.jsonl", DIR / "data.csv")


@atheris.instrument_func  # its mode branches count as coverage too
def TestOneInput(data: bytes) -> None:
    mode, payload = mode_and_payload(data, 2)
    PATHS[mode].write_bytes(payload)
    guarded(load_examples, PATHS[mode])


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
