"""A base-model fingerprint that identifies the base model but ignores any attached adapter.

Saved in every adapter.json and compared on load, so an adapter never lands silently on a model it
was not trained for (PEFT stores the base name but never checks it). Design:

- structure: SHA-256 of every base parameter's name and shape, read as if no adapter were attached
  (`q_proj.base.weight` counts as `q_proj.weight`; adapter tensors are skipped). dtypes are left out
  so that a float32-trained adapter still loads on the same model in bfloat16.
- weights: {name: SHA-256} of a strided sample (≤ 65,536 values) of up to 8 tensors no adapter edits:
  parameters outside nn.Linear layers (embeddings, norms) and weights of nn.Linear layers that no
  adapter wraps at save time (nor any other layer an adapter wraps with a weight it may merge into).
  Values are rounded to bfloat16 before hashing, so float32 and bfloat16 copies of one model agree; a
  float16 copy does not (double rounding), and the mismatch message says so.
- targets: {module path: the same sample hash} of every weight the saved file adapts, taken from the
  original weight (before any merge), so a file never loads onto another fine-tune's weights, nor onto
  a model it was already merged into (unload(merge=True)), where it would apply twice.
- compressed: {"<kind>(<settings>)": count} of the compressed stand-ins in the base, e.g.
  {"QuantizedLinear(bits=4, group_size=64)": 210} for a QLoRA-style base; present only when there are
  some. Their weights are buffers, so the structure hash alone already tells a quantized base from the
  full-precision one; this entry lets the mismatch message say which quantization to redo.
On load, a hashed weight of a layer that has since been wrapped and merged is compared through its
saved pre-merge copy, or skipped among the 8 general samples.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from typing import Any

import torch
from torch import nn

from ..errors import AdapterFileError, BaseModelMismatch
from ..surgery import CompressedLinear, Wrapper
from ..surgery import wrappers as _wrappers

FINGERPRINT_VERSION = 1
_SAMPLE_VALUES = 1 << 16
_TENSORS_PER_KIND = 4  # first two and last two of each kind


def base_name(name: str, wrappers: dict[str, Wrapper]) -> str | None:
    """`name` as it would be without adapter wrappers (`q_proj.base.weight` -> `q_proj.weight`);
    None for anything inside an adapter."""
    parts = name.split(".")
    kept, cut = [], 0
    while cut < len(parts):
        kept.append(parts[cut])
        if ".".join(parts[: cut + 1]) in wrappers and cut + 1 < len(parts):
            if parts[cut + 1] != "base":
                return None  # e.g. q_proj.adapters.default.lora_A
            cut += 1  # drop the "base" level
        cut += 1
    return ".".join(kept)


def base_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """{name: tensor} of the base model's parameters, named as if no adapter were attached."""
    wrappers = _wrappers(model)
    found: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        unwrapped = base_name(name, wrappers) if wrappers else name
        if unwrapped is not None:
            found[unwrapped] = param
    return found


def _linear_weight_names(model: nn.Module) -> tuple[set[str], set[str]]:
    """(base names of params of plain nn.Linear layers, of layers an adapter wraps directly and may merge
    into: nn.Linear, and the embeddings and convs LoRA adapts)."""
    wrappers = _wrappers(model)
    wrapped_bases = {id(module.base) for module in wrappers.values()
                     if isinstance(getattr(module.base, "weight", None), nn.Parameter)}
    plain, wrapped = set(), set()
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear) or id(module) in wrapped_bases:
            base_path = base_name(path, wrappers)
            if base_path is not None:
                prefix = f"{base_path}." if base_path else ""
                names = {prefix + leaf for leaf, _ in module.named_parameters()}
                (wrapped if id(module) in wrapped_bases else plain).update(names)
    return plain, wrapped


def _sample_hash(tensor: torch.Tensor) -> str:
    flat = tensor.detach().reshape(-1)
    step = max(1, flat.numel() // _SAMPLE_VALUES)
    sample = flat[::step][:_SAMPLE_VALUES].to("cpu", torch.bfloat16).contiguous()
    digest = hashlib.sha256(str(tuple(tensor.shape)).encode())
    digest.update(sample.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()[:16]


def _structure_hash(params: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name, param in params.items():
        digest.update(f"{name}:{tuple(param.shape)};".encode())
    return digest.hexdigest()[:16]


def _ends(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names[:_TENSORS_PER_KIND // 2] + names[-(_TENSORS_PER_KIND // 2):]))


def _dtype_name(params: dict[str, torch.Tensor]) -> str:
    dtypes = [str(p.dtype).removeprefix("torch.") for p in params.values()]
    return max(set(dtypes), key=dtypes.count) if dtypes else "none"


def _name_or_path(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None) or None


def target_hashes(model: nn.Module, paths) -> dict[str, str]:
    """{module path: hash of a fixed sample of its original weight} for the modules a file targets."""
    found = {}
    for path in paths:
        module = model.get_submodule(path)
        weight = module.original_weight() if isinstance(module, Wrapper) else getattr(module, "weight", None)
        if torch.is_tensor(weight) and not weight.is_meta:
            found[path] = _sample_hash(weight)
    return found


def compressed_layers(model: nn.Module) -> dict[str, int]:
    """{"<kind>(<settings>)": count} of the compressed linear stand-ins in `model`."""
    kinds = Counter(f"{type(m).__name__}({m.settings()})" for m in model.modules()
                    if isinstance(m, CompressedLinear))
    return dict(sorted(kinds.items()))


def _compression_problem(saved: dict[str, Any], model: nn.Module) -> str | None:
    """The difference in compressed layers, in words, with what to do about it (None: none)."""
    before, now = saved.get("compressed"), compressed_layers(model)
    before = before if isinstance(before, dict) else {}  # absent (no compressed layers) or edited
    if before == now:
        return None

    def words(kinds: dict) -> str:
        return ", ".join(f"{count} × {kind}" for kind, count in kinds.items()) or "no compressed layers"

    return (f"its base had {words(before)}, this model has {words(now)}: quantize or compress this model "
            "the same way before loading (rankwise.train.quantize_base(model, bits, group_size) for a run's "
            "quantize_bits), or load with allow_base_mismatch=True to apply the adapter to these weights")


def model_fingerprint(model: nn.Module, targets=()) -> dict[str, Any]:
    """The fingerprint of `model`'s base, as stored under "base_model" in adapter.json; with `targets`
    (the module paths a file adapts) it also hashes each targeted weight, so a file never loads onto
    another weight at that place, including the one it was already merged into."""
    params = base_parameters(model)
    plain_linear, wrapped_linear = _linear_weight_names(model)
    usable = [n for n, p in params.items() if not p.is_meta]
    outside_linear = [n for n in usable if n not in plain_linear and n not in wrapped_linear]
    unwrapped_linear = [n for n in usable if n in plain_linear]
    chosen = _ends(outside_linear) + _ends(unwrapped_linear)
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "structure": _structure_hash(params),
        "weights": {name: _sample_hash(params[name]) for name in chosen},
        "dtype": _dtype_name(params),
        "name_or_path": _name_or_path(model),
        **({"compressed": compressed_layers(model)} if compressed_layers(model) else {}),
        **({"targets": target_hashes(model, targets)} if targets else {}),
    }


def _changed_by_adapters(model: nn.Module) -> set[str]:
    """Base weight names whose current value is not the original: adapters merged into them."""
    return {f"{path}.weight" for path, module in _wrappers(model).items() if module.base_is_modified()}


def fingerprint_differences(saved: dict[str, Any], model: nn.Module) -> list[str]:
    """What differs between a saved fingerprint and `model`, in words (empty: same base model)."""
    params = base_parameters(model)
    structure = _structure_hash(params)
    problems = []
    if saved.get("structure") != structure:
        problems.append(f"structure (module names and shapes) {saved.get('structure')} != {structure}")
    if "compressed" in saved or problems:
        problems[:0] = [problem] if (problem := _compression_problem(saved, model)) else []
    skip = _changed_by_adapters(model)
    for name, digest in (saved.get("weights") or {}).items():
        if name not in params:
            problems.append(f"{name} is missing from this model")
        elif name not in skip and not params[name].is_meta and _sample_hash(params[name]) != digest:
            problems.append(f"{name} has different values")
    targeted = saved.get("targets") or {}
    modules = dict(model.named_modules())
    present = [path for path in targeted if path in modules]
    problems += [f"{path} is missing from this model" for path in targeted if path not in modules]
    current = target_hashes(model, present)
    changed = [path for path in present if current.get(path, targeted[path]) != targeted[path]]
    if changed:
        problems.append(f"{len(changed)} targeted weight(s) have other values, e.g. {changed[0]}.weight "
                        "(another fine-tune of the base, or the adapter is already merged into it)")
    dtype = _dtype_name(params)
    if problems and saved.get("dtype") not in (None, dtype):
        problems.append(
            f"dtype {saved.get('dtype')} when saved, {dtype} now (a float16 cast alone changes the hashed "
            "values)"
        )
    return problems


def describe(fingerprint: dict[str, Any]) -> str:
    """A short id for messages: "<structure hash>/<weights hash>" and the model's name when known."""
    weights = sorted((fingerprint.get("weights") or {}).items())
    weights_id = hashlib.sha256(repr(weights).encode()).hexdigest()[:8]
    name = fingerprint.get("name_or_path")
    return f"{fingerprint.get('structure')}/{weights_id}" + (f" ({name})" if name else "")


def check_base(saved: dict[str, Any], model: nn.Module, allow_mismatch: bool, source: Any) -> None:
    """Raise BaseModelMismatch (or only warn, if allowed) when `saved` does not describe `model`'s base."""
    if not isinstance(saved, dict):
        raise AdapterFileError(f"{source}: base_model is not a JSON object; the file was edited.")
    hashes = [saved.get(key) or {} for key in ("weights", "targets")]
    well_typed = all(isinstance(h, dict) and all(isinstance(v, str) for v in h.values()) for h in hashes)
    if not well_typed or not isinstance(saved.get("structure", ""), str):
        raise AdapterFileError(f"{source}: base_model's hashes have the wrong JSON types; "
                               "the file was edited.")
    version = saved.get("fingerprint_version", 1)
    if not isinstance(version, int) or version > FINGERPRINT_VERSION:
        warnings.warn(f"{source}: base-model fingerprint version {version!r} is newer than this rankwise "
                      "reads; the base model was not checked. Upgrade rankwise to check it.", stacklevel=4)
        return
    problems = fingerprint_differences(saved, model)
    if not problems:
        return
    message = (
        f"{source} was saved for base model {describe(saved)}, but this model is "
        f"{describe(model_fingerprint(model))}: {'; '.join(problems[:5])}."
    )
    if allow_mismatch:
        warnings.warn(message + " Loading anyway because allow_base_mismatch=True.", stacklevel=4)
        return
    raise BaseModelMismatch(
        message + " Load it onto the base model it was trained on, or pass allow_base_mismatch=True "
        "to load it anyway (e.g. onto a float16 copy or a deliberately different base)."
    )
