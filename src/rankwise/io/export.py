"""Export a model with its active adapter for tools that do not have rankwise.

    export_model(model, "out/peft", "peft")                    # PEFT's adapter_config.json + safetensors
    export_model(model, "out/merged", "merged", tokenizer)     # config.json, model.safetensors, tokenizer
    export_model(model, "out/gguf", "gguf", tokenizer, "f16")  # model-f16.gguf (io.gguf_export)

peft    save_adapter(format="peft"): lora, rslora, dora, pissa and lora-xs, which PEFT computes exactly;
        other methods are refused (io.peft_format).
merged  every active adapter is folded into its base weight with the layers' own exact merge
        (W <- merged_weight(W)), the weights are read under the base model's names, and the merge is
        undone, which restores the caller's weights bit for bit. The folder is what save_pretrained writes
        for the plain model (config.json, generation_config.json, model.safetensors, the tokenizer), so
        transformers loads it with AutoModelForCausalLM.from_pretrained and no rankwise installed.
gguf    the same merged weights as one GGUF file, for Llama-architecture models (io.gguf_export).
dtype "f16" stores the merged weights in float16 (norms stay float32 in a GGUF); "f32" keeps them.
Limits: adapters only; a model that another family changed (compression, residual variants) holds modules
plain transformers does not have, so merged and gguf refuse it (save it with save_model). Methods that
cannot merge (VG-LoRA, PGA, block-level methods) are refused for merged and gguf.
Each export writes its folder through atomic_directory: a failed export leaves the folder as it was.
io sits below the families: the merge goes through the adapter wrappers' own merge/unmerge methods.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .._registry import FAMILIES
from ..errors import AdapterFileError, ConfigError, NotMergeable
from ..surgery import check_untied, wrappers
from .adapter_file import refuse_foreign_files, save_adapter
from .atomic import atomic_directory, save_tensors
from .gguf_export import FILE_TYPES, gguf_file_name, write_gguf
from .model_folder import base_state

EXPORT_FORMATS = ("peft", "merged", "gguf")
MERGED_WEIGHTS = "model.safetensors"
# What a merged export writes (save_pretrained's names); a folder holding anything else is someone's work.
HF_FOLDER_FILES = {"config.json", "generation_config.json", MERGED_WEIGHTS, "tokenizer.json",
                   "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "vocab.json",
                   "merges.txt", "added_tokens.json"}


def active_adapter_names(model: nn.Module) -> list[str]:
    """The adapters the model runs, in order (read from the wrappers, not the adapter family)."""
    names: dict[str, None] = {}
    for layer in wrappers(model).values():
        names.update(dict.fromkeys(getattr(layer, "active", [])))
    return list(names)


def check_only_adapters(model: nn.Module, purpose: str) -> None:
    others = [family for family in FAMILIES.names()
              if family != "adapter" and FAMILIES.get(family).installed(model)]
    if others:
        raise ConfigError(f"{purpose} needs a plain transformers model with adapters, and this one also "
                          f"holds {', '.join(others)} changes, whose layers plain transformers does not "
                          "have; save it with rankwise.save_model instead.")


@contextlib.contextmanager
def adapters_merged(model: nn.Module, purpose: str = "merging") -> Iterator[dict[str, torch.Tensor]]:
    """{base name: tensor} of the model with its active adapters merged; on exit the weights are restored."""
    check_only_adapters(model, purpose)
    layers = wrappers(model)
    if not active_adapter_names(model):
        raise ConfigError(f"{purpose} needs an active adapter to merge; the model has none.")
    if any(getattr(layer, "disabled", False) for layer in layers.values()):
        raise ConfigError("the adapters are disabled (rankwise.disable); enable them before exporting.")
    for path, layer in layers.items():
        for name in layer.active:
            adapter = layer.adapters[name]
            if not getattr(adapter, "mergeable", True):
                raise NotMergeable(f"{adapter.name} cannot be merged into the base weights ({path}), which "
                                   f"{purpose} needs; export it with --to peft if PEFT has the method, or "
                                   "keep the rankwise adapter.")
    check_untied(model, [path for path, layer in layers.items() if layer.active])
    before = {path: list(layer.merged) for path, layer in layers.items()}
    try:
        for layer in layers.values():
            layer.merge(layer.active)
        yield base_state(model, [])
    finally:
        for path, layer in layers.items():  # the exact saved weights come back, then any earlier merge
            layer.unmerge()
            layer.merge(before[path])


def _refuse_foreign(directory: Path, allowed: set[str], what: str) -> None:
    if directory.exists() and not directory.is_dir():
        raise AdapterFileError(f"{directory} is a file; give --out a folder path.")
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    foreign = [name for name in present if name not in allowed and name != ".DS_Store"]
    if foreign:
        raise AdapterFileError(f"{directory} holds other files ({', '.join(foreign[:5])}); an export "
                               f"replaces the whole folder, so write the {what} into an empty or new folder.")


def check_destination(directory: str | os.PathLike, to: str, dtype: str | None = None) -> None:
    """Refuse, before any work, a format or dtype export does not write, or an --out holding other files."""
    directory = Path(directory)
    if to not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {to!r}; use one of {', '.join(EXPORT_FORMATS)}.")
    if dtype is not None and dtype not in FILE_TYPES:
        raise ConfigError(f"--dtype {dtype!r}: use f32 or f16.")
    if to == "peft":
        if dtype is not None:
            raise ConfigError("--dtype applies to --to merged and gguf; a PEFT adapter keeps its own dtype.")
        refuse_foreign_files(directory)
    elif to == "merged":
        _refuse_foreign(directory, HF_FOLDER_FILES, "merged model")
    else:
        _refuse_foreign(directory, {gguf_file_name(kind) for kind in FILE_TYPES}, "GGUF file")


def _check_not_base(model: nn.Module, directory: Path) -> None:
    source = getattr(getattr(model, "config", None), "name_or_path", "") or ""
    if source and Path(source).is_dir() and Path(source).resolve() == directory.resolve():
        raise AdapterFileError(f"{directory} is the base model's own folder; an export would replace it. "
                               "Pick another --out.")


def _cast(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    kind = {"f32": torch.float32, "f16": torch.float16}[dtype]
    return {name: t.to(kind) if t.is_floating_point() else t for name, t in state.items()}


def write_merged_folder(model: nn.Module, directory: Path, tokenizer, dtype: str) -> Path:
    if not hasattr(model, "config") or not hasattr(model.config, "save_pretrained"):
        raise ConfigError("--to merged needs a transformers model (it writes its config.json).")
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.dtype = {"f32": torch.float32, "f16": torch.float16}[dtype]
    with adapters_merged(model, "--to merged") as state, atomic_directory(directory) as tmp:
        config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_tensors(tmp / MERGED_WEIGHTS, _cast(state, dtype), metadata={"format": "pt"})
    return directory


def write_gguf_folder(model: nn.Module, directory: Path, tokenizer, dtype: str) -> Path:
    config = getattr(model, "config", None)
    if config is None:
        raise ConfigError("--to gguf needs a transformers Llama model.")
    with adapters_merged(model, "--to gguf") as state, atomic_directory(directory) as tmp:
        write_gguf(tmp / gguf_file_name(dtype), state, config, tokenizer, dtype)
    return directory


def export_model(model: nn.Module, directory: str | os.PathLike, to: str, tokenizer=None,
                 dtype: str | None = None) -> Path:
    """Export `model` with its active adapter to `directory` as `to` ("peft", "merged" or "gguf"); the
    folder is replaced as a whole. `dtype` ("f32" default, or "f16") applies to merged and gguf. The model
    is left as it was. Returns the folder (for gguf, the file is <folder>/model-<dtype>.gguf)."""
    directory = Path(directory)
    check_destination(directory, to, dtype)
    _check_not_base(model, directory)
    if to == "peft":
        names = active_adapter_names(model)
        if len(names) != 1:
            raise ConfigError(f"--to peft writes one adapter, and the model runs {names or 'none'}; make one "
                              "active (rankwise.set_active).")
        return save_adapter(model, directory, names[0], format="peft")
    if to == "merged":
        return write_merged_folder(model, directory, tokenizer, dtype or "f32")
    return write_gguf_folder(model, directory, tokenizer, dtype or "f32")
