"""Fuzz PEFT's adapter_config.json import: read_json, rankwise_config_from_peft(cfg, path), then
layer_configs_from_peft(cfg, config, targets, path) as read_peft_adapter does (rank_pattern /
alpha_pattern regexes are matched against the tiny Llama's module paths).

Input: the bytes of an adapter_config.json. Seeds: files PeftModel.save_pretrained wrote.
"""

import sys

import atheris
import numpy  # noqa: F401 - heavy dependencies first, so that only rankwise is instrumented
import safetensors  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

with atheris.instrument_imports(include=["rankwise"]):
    import rankwise  # noqa: F401
    from rankwise.io.peft_config import layer_configs_from_peft, rankwise_config_from_peft
    from rankwise.io.readers import read_json

from _common import guarded, work_dir  # noqa: E402

PATH = work_dir("peft_config") / "adapter_config.json"
TARGETS = [
    f"model.layers.{i}.{part}"
    for i in range(2)
    for part in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
]


@atheris.instrument_func  # its mode branches count as coverage too
def TestOneInput(data: bytes) -> None:
    PATH.write_bytes(data)
    cfg = guarded(read_json, PATH)
    if cfg is None:
        return
    result = guarded(rankwise_config_from_peft, cfg, PATH)
    if result is not None:
        _, config = result
        guarded(layer_configs_from_peft, cfg, config, TARGETS, PATH)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
