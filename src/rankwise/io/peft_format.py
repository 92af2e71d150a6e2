"""Export to and import from Hugging Face PEFT's adapter format (checked against PEFT 0.21.2).

PEFT writes adapter_config.json (a LoraConfig) and adapter_model.safetensors with keys
    base_model.model.<module path>.lora_A.weight      (r, in)
    base_model.model.<module path>.lora_B.weight      (out, r)
    base_model.model.<module path>.lora_magnitude_vector   (out,)   DoRA only
On other layer kinds (rankwise.adapters.layer_kinds) the same tensors take PEFT's per-kind names and shapes:
    nn.Embedding:    lora_embedding_A (r, num_embeddings), lora_embedding_B (dim, r), magnitude (dim,)
    nn.ConvNd:       lora_A.weight (r, in, *kernel), lora_B.weight (out, r, 1, ..), magnitude (1, out, 1, ..)
    GPT-2's Conv1D:  as nn.Linear (A (r, in), B (out, r)), with fan_in_fan_out=True in the config
rankwise keeps A and B as matrices (a conv's A is (r, in · kernel)); export reshapes, import flattens.
PEFT's conv LoRA applies A with the base's stride and padding but not its dilation or padding mode, so
convs with either do not export (rankwise's update, with both, is the one that merges exactly).
Its LoRA scaling is lora_alpha / r, or lora_alpha / √r with use_rslora; its DoRA computes
m ⊙ (W + s B A) / ‖W + s B A‖_row exactly as rankwise's does, so these map one to one:
    lora -> plain LoRA    rslora -> use_rslora=True    dora -> use_dora=True
PiSSA (rankwise computes W x + s (B A - B₀ A₀) x, the base weight untouched) exports as a plain
LoRA of rank 2r, PEFT's own PiSSA conversion:  s (B A - B₀ A₀) = s [B, -B₀] [A; A₀],  lora_alpha = 2·alpha,
so the file works in PEFT on the original base model; it imports back as a rank-2r lora.
LoRA-XS exports as the LoRA (A, B R) of the same rank (s B R A = s (B R) A); it imports back as lora.
Layers with their own rank or alpha (SoRA after finalize) map to PEFT's rank_pattern / alpha_pattern,
keyed by the escaped full module path; import applies PEFT's pattern rule per layer.
The base-model fingerprint travels in the safetensors metadata (PEFT ignores it), so a PEFT file
saved by rankwise is still checked against its base on import.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import AdapterFileError, ConfigError
from ..surgery import Wrapper, layer_kind
from .atomic import atomic_directory, save_tensors, write_json
from .fingerprint import model_fingerprint
from .peft_config import layer_configs_from_peft, peft_config_for, peft_patterns, rankwise_config_from_peft
from .readers import SavedAdapter, load_tensors, read_json

PEFT_WEIGHTS_FILE, PEFT_CONFIG_FILE = "adapter_model.safetensors", "adapter_config.json"
KEY_PREFIX = "base_model.model."
# rankwise tensor name -> PEFT's saved suffix (adapter name already removed by PEFT on save)
PEFT_SUFFIX = {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight", "magnitude": "lora_magnitude_vector"}
PEFT_EMBEDDING_SUFFIX = {**PEFT_SUFFIX, "lora_A": "lora_embedding_A", "lora_B": "lora_embedding_B"}
FINGERPRINT_METADATA = "rankwise_base_model"


def pissa_as_lora(A: torch.Tensor, B: torch.Tensor, init_A: torch.Tensor, init_B: torch.Tensor):
    """(A', B') of rank 2r with B' A' = B A - B₀ A₀: PiSSA's update relative to the original weight."""
    return torch.cat([A, init_A], dim=0), torch.cat([B, -init_B], dim=1)


def _pissa(state: dict) -> tuple[dict, int]:
    A, B = pissa_as_lora(state["lora_A"], state["lora_B"], state["init_A"], state["init_B"])
    return {"lora_A": A, "lora_B": B}, 2


def _lora_xs(state: dict) -> tuple[dict, int]:
    # s B R A = s (B R) A: a plain LoRA of the same rank and scaling.
    return {"lora_A": state["lora_A"], "lora_B": state["lora_B"] @ state["lora_R"]}, 1


def _same(state: dict) -> tuple[dict, int]:
    return state, 1


# method -> (its state dict -> (PEFT LoRA tensors under rankwise names, rank multiplier))
PEFT_EXPORTS = {"lora": _same, "rslora": _same, "dora": _same, "pissa": _pissa, "lora-xs": _lora_xs}
EXPORTABLE = tuple(PEFT_EXPORTS)


def _base_layer(model: nn.Module, path: str) -> nn.Module:
    module = model.get_submodule(path)
    return module.base if isinstance(module, Wrapper) else module


def peft_layer_tensors(layer: nn.Module, path: str, state: dict) -> dict:
    """{PEFT suffix: tensor} of one adapted layer, in the names and shapes PEFT gives its kind."""
    kind = layer_kind(layer)
    if kind == "conv":
        if any(d != 1 for d in layer.dilation) or layer.padding_mode != "zeros":
            raise ConfigError(f"{path} is a {type(layer).__name__} with dilation={layer.dilation} and "
                              f"padding_mode={layer.padding_mode!r}; PEFT's conv LoRA ignores both, so it "
                              "would compute another update. Save it with format='rankwise'.")
        ones = (1,) * (layer.weight.dim() - 2)
        shapes = {"lora_A": (-1, *layer.weight.shape[1:]), "lora_B": (*state["lora_B"].shape, *ones),
                  "magnitude": (1, -1, *ones)}
        state = {key: value.reshape(shapes[key]) for key, value in state.items()}
    names = PEFT_EMBEDDING_SUFFIX if kind == "embedding" else PEFT_SUFFIX
    return {names[key]: value for key, value in state.items()}


def save_peft_adapter(model: nn.Module, directory: Path, record: dict, tensors: dict, version: str) -> Path:
    """Write the adapter `record` (io.adapter_file.plan_record) in PEFT's format (module docstring)."""
    method, config, plan = record["method"], record["config"], record["plan"]
    if config.get("modules_to_save"):
        raise ConfigError("PEFT export of modules_to_save copies is not supported yet; save the adapter with "
                          "format='rankwise'.")
    if method not in EXPORTABLE:
        raise ConfigError(
            f"PEFT export supports {', '.join(EXPORTABLE)}; {method!r} has no exact PEFT LoRA equivalent. "
            "Save it with format='rankwise' instead."
        )
    peft_tensors, factor = {}, 1
    for path in plan:
        prefix = path + "."
        state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        state, factor = PEFT_EXPORTS[method](state)
        for key, value in peft_layer_tensors(_base_layer(model, path), path, state).items():
            peft_tensors[f"{KEY_PREFIX}{path}.{key}"] = value
    # rank × factor with alpha × factor keeps PEFT's scaling alpha / rank equal to rankwise's.
    rank, alpha = config["rank"] * factor, config["alpha"] * factor
    rank_pattern, alpha_pattern = peft_patterns(config, plan, factor)
    fingerprint = model_fingerprint(model, list(plan))
    peft_config = peft_config_for(method, config, rank, alpha, list(plan), fingerprint["name_or_path"],
                                  rank_pattern, alpha_pattern)
    # PEFT sets fan_in_fan_out per layer from its type (with a warning when the file says otherwise)
    kinds = {layer_kind(_base_layer(model, path)) for path in plan}
    peft_config["fan_in_fan_out"] = "transposed-linear" in kinds
    metadata = {
        "format": "pt",
        FINGERPRINT_METADATA: json.dumps(fingerprint, sort_keys=True),
        "rankwise_version": version,
    }
    with atomic_directory(directory) as tmp:
        save_tensors(tmp / PEFT_WEIGHTS_FILE, peft_tensors, metadata=metadata)
        write_json(tmp / PEFT_CONFIG_FILE, peft_config)
    return directory


def rankwise_state_from_peft(tensors: dict[str, torch.Tensor], source: Path):
    """({"<path>.<rankwise tensor>": tensor}, [module paths in file order]) from PEFT's keys; conv
    factors and magnitudes are flattened to rankwise's matrices (no-ops on the other kinds)."""
    by_suffix = {suffix: ours for names in (PEFT_SUFFIX, PEFT_EMBEDDING_SUFFIX)
                 for ours, suffix in names.items()}
    state, paths, unknown = {}, {}, []
    for key, value in tensors.items():
        body = key[len(KEY_PREFIX):] if key.startswith(KEY_PREFIX) else None
        match = next((s for s in by_suffix if body is not None and body.endswith("." + s)), None)
        if match is None:
            unknown.append(key)
            continue
        path, ours = body[: -len(match) - 1], by_suffix[match]
        if value.dim() > (1 if ours == "magnitude" else 2):  # a conv's: (1, out, 1, ..) or (r, in, *kernel)
            value = value.reshape(-1) if ours == "magnitude" else value.flatten(1)
        state[f"{path}.{ours}"] = value
        paths[path] = None
    if unknown:
        raise AdapterFileError(
            f"{source} has {len(unknown)} tensor(s) rankwise cannot import, e.g. {unknown[:5]}; rankwise "
            f"imports LoRA/DoRA weights ({', '.join(sorted(by_suffix))} under '{KEY_PREFIX}'). "
            "lora_bias, modules_to_save and trainable tokens are not supported."
        )
    return state, list(paths)


def read_peft_adapter(directory: Path) -> SavedAdapter:
    """A PEFT LoRA / rsLoRA / DoRA adapter directory, read and checked without its base model."""
    config_path, weights_path = directory / PEFT_CONFIG_FILE, directory / PEFT_WEIGHTS_FILE
    peft_config = read_json(config_path)
    method, config = rankwise_config_from_peft(peft_config, config_path)
    if not weights_path.exists():
        pickled = [p.name for p in directory.glob("adapter_model.*") if p.suffix in (".bin", ".pt", ".pth")]
        hint = (
            f" It holds {pickled[0]}, a pickle file rankwise never loads; convert it with PEFT "
            "(PeftModel.from_pretrained, then save_pretrained(safe_serialization=True))."
        ) if pickled else ""
        raise AdapterFileError(f"{weights_path} is missing.{hint}")
    tensors, metadata = load_tensors(weights_path)
    base_model = None
    if FINGERPRINT_METADATA in metadata:
        try:
            base_model = json.loads(metadata[FINGERPRINT_METADATA])
        except json.JSONDecodeError as err:
            raise AdapterFileError(
                f"{weights_path}: its {FINGERPRINT_METADATA} metadata is not JSON ({err})."
            ) from None
    state, targets = rankwise_state_from_peft(tensors, weights_path)
    # PEFT's own patterns (suffixes, regexes, layers_to_transform) become the exact list of adapted modules.
    config = dataclasses.replace(config, targets=targets)
    plan = layer_configs_from_peft(peft_config, config, targets, config_path)
    unchecked = (f"{weights_path} has no base-model fingerprint (PEFT does not write one); cannot check it "
                 f"fits this model (it names {peft_config.get('base_model_name_or_path')!r}).")
    return SavedAdapter(method, "default", config, plan, state, base_model, weights_path, weights_path,
                        unchecked)
