"""Fuzz a whole rankwise.load_adapter(model, folder) onto the tiny Llama of tests/conftest.py.

Input: the first byte picks the mode, the rest is the fuzzed file.
    0: the rest replaces adapter.safetensors next to a valid adapter.json (whose weights_sha256 then
       no longer matches: load_tensors parses the file first, so the safetensors parser is reached)
    1: the same, with weights_sha256 in adapter.json rewritten to the fuzzed file's sha256, so the
       tensors are checked against the model and applied
    2: the rest replaces adapter.json (next to the template's LoRA weights); when it parses as a JSON
       object, its settings_sha256 (and weights_sha256, when present) are rewritten to match, so the
       base-model check, the plan and the tensor checks are reached
After every failed load the model must be unchanged: no adapted layer (rankwise.adapters.adapted_layers),
the same parameters with the same values.
"""

import hashlib
import json
import shutil
import sys

import atheris
import numpy  # noqa: F401 - heavy dependencies first, so that only rankwise is instrumented
import safetensors  # noqa: F401
import torch
import transformers  # noqa: F401

with atheris.instrument_imports(include=["rankwise"]):
    import rankwise
    import rankwise.adapters
    import rankwise.surgery  # noqa: F401
    from rankwise.adapters import adapted_layers
    from rankwise.io.adapter_file import settings_digest

from _common import SEEDS, PromiseBroken, finding, guarded, make_tiny_llama, mode_and_payload, work_dir  # noqa: E402

DIR = work_dir("adapter_folder") / "adapter"
TEMPLATE = SEEDS / "adapter_folder"
META = json.loads((TEMPLATE / "adapter.json").read_text())
WEIGHTS = (TEMPLATE / "adapter.safetensors").read_bytes()
WEIGHTS_SHA = hashlib.sha256(WEIGHTS).hexdigest()


def snapshot(model) -> dict:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


MODEL = make_tiny_llama()
BEFORE = snapshot(MODEL)


def unchanged(model) -> str | None:
    """What a failed load changed in the model, or None."""
    if adapted_layers(model):
        return f"adapted layers left attached: {sorted(adapted_layers(model))[:3]}"
    now = model.state_dict()
    if now.keys() != BEFORE.keys():
        return f"parameters added or removed: {sorted(set(now) ^ set(BEFORE))[:3]}"
    changed = [name for name, value in now.items() if not torch.equal(value, BEFORE[name])]
    if changed:
        return f"parameter values changed: {changed[:3]}"
    return None


def write_folder(mode: int, payload: bytes) -> None:
    DIR.mkdir(parents=True, exist_ok=True)
    if mode == 2:
        meta_bytes = payload
        try:
            meta = json.loads(payload)
        except (ValueError, RecursionError):
            meta = None
        if isinstance(meta, dict):
            if "weights_sha256" in meta:  # a seed of another method: let its record meet these weights
                meta["weights_sha256"] = WEIGHTS_SHA
            try:
                meta["settings_sha256"] = settings_digest(meta)
                meta_bytes = json.dumps(meta).encode()
            except (ValueError, TypeError, RecursionError):
                pass  # keep the raw bytes
        (DIR / "adapter.json").write_bytes(meta_bytes)
        (DIR / "adapter.safetensors").write_bytes(WEIGHTS)
        return
    meta = dict(META)
    if mode == 1:
        meta["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    (DIR / "adapter.json").write_text(json.dumps(meta))
    (DIR / "adapter.safetensors").write_bytes(payload)


@atheris.instrument_func  # its mode branches count as coverage too
def TestOneInput(data: bytes) -> None:
    global MODEL
    mode, payload = mode_and_payload(data, 3)
    write_folder(mode, payload)
    loaded = guarded(rankwise.load_adapter, MODEL, DIR)
    if loaded is not None:  # a valid adapter: start the next input from a clean model
        MODEL = make_tiny_llama()
        return
    problem = unchanged(MODEL)
    if problem:
        MODEL = make_tiny_llama()
        try:
            raise PromiseBroken(problem)
        except PromiseBroken as err:
            finding(err, "failed load changed the model")


if __name__ == "__main__":
    shutil.rmtree(DIR, ignore_errors=True)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
