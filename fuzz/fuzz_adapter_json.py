"""Fuzz adapter.json: rankwise.io.readers.read_json, then parse_plan(meta, path, "adapter") on the dict.

Input: the bytes of an adapter.json. Seeds: adapter.json files save_adapter wrote (fuzz/make_seeds.py).
Run: .venv/bin/python fuzz/fuzz_adapter_json.py fuzz/corpus/adapter_json  (or give a crash file)
"""

import sys

import atheris
import numpy  # noqa: F401 - heavy dependencies first, so that only rankwise is instrumented
import safetensors  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

with atheris.instrument_imports(include=["rankwise"]):
    import rankwise
    from rankwise.io.adapter_file import parse_plan
    from rankwise.io.readers import read_json

from _common import guarded, work_dir  # noqa: E402

PATH = work_dir("adapter_json") / "adapter.json"


@atheris.instrument_func  # its mode branches count as coverage too
def TestOneInput(data: bytes) -> None:
    PATH.write_bytes(data)
    meta = guarded(read_json, PATH)
    if meta is not None:
        guarded(parse_plan, meta, PATH, "adapter")


if __name__ == "__main__":
    assert rankwise.__version__
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
