"""Fuzz training settings: config files and command-line overrides.

Input: the first byte picks the mode, the rest is the fuzzed text.
    0: written as config.json -> rankwise.train.config.read_config_file, then TrainConfig.from_dict
    1: written as config.yaml -> the same, through PyYAML's safe_load
    2: decoded as UTF-8 (errors="replace"), split on whitespace into tokens ->
       rankwise.cli.overrides.parse_overrides(tokens), then resolve_settings(None, tokens) and
       TrainConfig.from_dict on the result (what `rankwise finetune key=value ...` does)
"""

import sys

import atheris
import numpy  # noqa: F401 - heavy dependencies first, so that only rankwise (and yaml) is instrumented
import safetensors  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

with atheris.instrument_imports(include=["rankwise", "yaml"]):
    import yaml  # noqa: F401

    import rankwise
    import rankwise.adapters  # noqa: F401 - imported lazily by TrainConfig: instrument them now
    import rankwise.data  # noqa: F401
    import rankwise.models  # noqa: F401
    import rankwise.optim  # noqa: F401
    from rankwise.cli.overrides import parse_overrides, resolve_settings
    from rankwise.train.config import TrainConfig, read_config_file

from _common import guarded, mode_and_payload, work_dir  # noqa: E402

DIR = work_dir("config")
PATHS = (DIR / "config.json", DIR / "config.yaml")


@atheris.instrument_func  # its mode branches count as coverage too
def TestOneInput(data: bytes) -> None:
    mode, payload = mode_and_payload(data, 3)
    if mode < 2:
        PATHS[mode].write_bytes(payload)
        values = guarded(read_config_file, PATHS[mode])
    else:
        tokens = payload.decode("utf-8", errors="replace").split()
        if guarded(parse_overrides, tokens) is None:
            return
        values = guarded(resolve_settings, None, tokens)
    if isinstance(values, dict):
        guarded(TrainConfig.from_dict, values)


if __name__ == "__main__":
    assert rankwise.__version__
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
