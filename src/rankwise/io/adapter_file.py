"""save_adapter / load_adapter: one adapter per directory, in rankwise's own format or PEFT's.

rankwise format (format_version 1):
    adapter.safetensors  {"<module path>.<tensor>": tensor}, e.g. "model.layers.0.self_attn.q_proj.lora_A"
                         (the adapter's state_dict keys, prefixed by the path of the layer it wraps)
    adapter.json         format_version, rankwise_version, method, name, config (config.to_dict()),
                         targets (the exact module paths), base_model (fingerprint.py), weights_sha256,
                         and layer_configs {path: config} for layers whose config differs (per-layer ranks)
A directory is written as a whole through atomic_directory: a failed or interrupted save leaves the
previous adapter there untouched. load_adapter picks the format from which config file exists.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from ..adapters import ADAPTERS, AdapterConfig, layers_of
from ..errors import AdapterFileError, ConfigError
from .atomic import atomic_directory, save_tensors, write_json
from .attach import attach
from .fingerprint import check_base, model_fingerprint
from .readers import load_tensors, read_json, sha256_file

FORMAT_VERSION = 1
WEIGHTS_FILE, META_FILE = "adapter.safetensors", "adapter.json"
PEFT_WEIGHTS_FILE, PEFT_CONFIG_FILE = "adapter_model.safetensors", "adapter_config.json"
# Files a save may replace; anything else in the directory means it is not an adapter directory.
ADAPTER_DIR_FILES = {WEIGHTS_FILE, META_FILE, PEFT_WEIGHTS_FILE, PEFT_CONFIG_FILE, "README.md"}
_REQUIRED_KEYS = ("method", "config", "targets")
_KNOWN_KEYS = {"format_version", "rankwise_version", "name", "base_model", "weights_sha256", "layer_configs",
               *_REQUIRED_KEYS}


def rankwise_version() -> str:
    """The installed rankwise version, as written into saved files."""
    from .. import __version__  # at call time: rankwise/__init__ imports this package before defining it

    return __version__


def adapter_layout(model: nn.Module, name: str) -> tuple[str, AdapterConfig, dict[str, AdapterConfig]]:
    """(method, the config most layers share, {path: config} of the layers whose config differs from it).

    Layers usually share one config; methods that prune per layer (SoRA's finalize) leave different ranks.
    """
    layers = layers_of(model, name)
    methods = {type(adapter).name for adapter in layers.values()}
    if len(methods) > 1:
        raise ConfigError(
            f"adapter {name!r} mixes methods {sorted(methods)} across its layers; an adapter file holds one "
            "method. Save each method under its own adapter name."
        )
    configs = [adapter.config for adapter in layers.values()]
    # the first of the most used configs
    common = max(configs, key=lambda config: sum(other == config for other in configs))
    overrides = {path: adapter.config for path, adapter in layers.items() if adapter.config != common}
    return methods.pop(), common, overrides


def _refuse_foreign_files(directory: Path) -> None:
    # A save replaces the whole directory, so never point it at one holding other work.
    if directory.exists() and not directory.is_dir():
        raise AdapterFileError(f"{directory} is a file; save the adapter to a directory path.")
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    foreign = [entry for entry in present if entry not in ADAPTER_DIR_FILES and entry != ".DS_Store"]
    if foreign:
        raise AdapterFileError(
            f"{directory} holds other files ({', '.join(foreign[:5])}); a save replaces the whole directory, "
            "so save the adapter into an empty or new directory of its own."
        )


def save_adapter(model: nn.Module, directory: str | os.PathLike, name: str = "default", *,
                 format: str = "rankwise") -> Path:
    """Save adapter `name` of `model` into `directory` (created or replaced as a whole); returns it.

    format="rankwise" writes adapter.safetensors + adapter.json; format="peft" writes PEFT's
    adapter_model.safetensors + adapter_config.json (lora, rslora, dora; pissa as a rank-2r LoRA and
    lora-xs as a LoRA; other methods raise ConfigError). Raises AdapterFileError if `directory` holds
    files other than an adapter's, since the whole directory is replaced.
    """
    directory = Path(directory)
    if format == "peft":
        from .peft_format import save_peft_adapter

        _refuse_foreign_files(directory)
        return save_peft_adapter(model, directory, name)
    if format != "rankwise":
        raise ConfigError(f"unknown adapter file format {format!r}; use 'rankwise' or 'peft'.")
    tensors = {
        f"{path}.{key}": value
        for path, adapter in layers_of(model, name).items()
        for key, value in adapter.state_dict().items()
    }
    method, config, overrides = adapter_layout(model, name)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "rankwise_version": rankwise_version(),
        "method": method,
        "name": name,
        "config": config.to_dict(),
        "targets": list(layers_of(model, name)),
        "base_model": model_fingerprint(model),
    }
    if overrides:  # only when layers differ, so ordinary files stay as they were
        meta["layer_configs"] = {path: layer_config.to_dict() for path, layer_config in overrides.items()}
    _refuse_foreign_files(directory)
    with atomic_directory(directory) as tmp:
        save_tensors(tmp / WEIGHTS_FILE, tensors, metadata={"format": "pt"})
        meta["weights_sha256"] = sha256_file(tmp / WEIGHTS_FILE)
        write_json(tmp / META_FILE, meta)
    return directory


def load_adapter(model: nn.Module, directory: str | os.PathLike, name: str | None = None, *,
                 allow_base_mismatch: bool = False) -> nn.Module:
    """Load the adapter saved in `directory` (rankwise or PEFT format) onto `model` and make it active.

    `name` defaults to the saved name ("default" for PEFT files). Raises AdapterFileError for missing,
    corrupted or unfitting files and BaseModelMismatch when the file was saved for another base model
    (allow_base_mismatch=True loads anyway, with a warning). The model is unchanged when loading fails.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise AdapterFileError(f"{directory} is not a directory; pass the directory save_adapter wrote.")
    if (directory / META_FILE).exists():
        return _load_rankwise(model, directory, name, allow_base_mismatch)
    if (directory / PEFT_CONFIG_FILE).exists():
        from .peft_format import load_peft_adapter

        return load_peft_adapter(model, directory, name, allow_base_mismatch)
    present = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    raise AdapterFileError(
        f"{directory} has neither {META_FILE} (rankwise) nor {PEFT_CONFIG_FILE} (PEFT); it holds "
        f"{present or 'nothing'}. Point load_adapter at the directory save_adapter wrote."
    )


def _check_meta(meta: dict[str, Any], source: Path) -> None:
    missing = [key for key in _REQUIRED_KEYS if key not in meta]
    if missing:
        raise AdapterFileError(f"{source} lacks {missing}; it is not a rankwise adapter file or was edited.")
    version = meta.get("format_version", 1)  # absent: the oldest format
    if not isinstance(version, int) or version < 1:
        raise AdapterFileError(f"{source}: format_version {version!r} is not a positive integer.")
    if version > FORMAT_VERSION:
        raise AdapterFileError(
            f"{source} was written by rankwise {meta.get('rankwise_version', '?')} in adapter format "
            f"{version}; this rankwise {rankwise_version()} reads formats up to {FORMAT_VERSION}. "
            "Upgrade rankwise."
        )
    kinds = (("method", str), ("config", dict), ("targets", list), ("layer_configs", dict))
    wrong_types = [key for key, kind in kinds if key in meta and not isinstance(meta[key], kind)]
    if wrong_types or not all(isinstance(path, str) for path in meta["targets"]):
        raise AdapterFileError(
            f"{source}: {wrong_types or ['targets']} has the wrong JSON type; the file was edited."
        )
    name = meta.get("name", "default")
    if not isinstance(name, str) or not name or "." in name:
        raise AdapterFileError(f"{source}: adapter name {name!r} must be a non-empty string without '.'.")
    unknown = sorted(set(meta) - _KNOWN_KEYS)
    if unknown:
        warnings.warn(f"{source}: ignoring unknown keys {unknown} (written by a newer rankwise?).",
                      stacklevel=4)
    if meta["method"] not in ADAPTERS:
        raise AdapterFileError(
            f"{source} holds a {meta['method']!r} adapter, a method this rankwise {rankwise_version()} does "
            f"not know (it knows {', '.join(ADAPTERS.names())}). Upgrade rankwise or import the module that "
            "registers it."
        )


def _load_rankwise(model: nn.Module, directory: Path, name: str | None,
                   allow_base_mismatch: bool) -> nn.Module:
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    meta = read_json(meta_path)
    _check_meta(meta, meta_path)
    method = meta["method"]
    config = _parse_config(method, meta["config"], meta_path, "config")
    layer_configs = {
        path: _parse_config(method, values, meta_path, f"layer_configs[{path!r}]")
        for path, values in meta.get("layer_configs", {}).items()
    }
    stray = sorted(set(layer_configs) - set(meta["targets"]))
    if stray:
        raise AdapterFileError(f"{meta_path}: layer_configs names modules not in targets: {stray[:5]}.")
    if "base_model" in meta:
        check_base(meta["base_model"], model, allow_base_mismatch, meta_path)
    else:
        warnings.warn(f"{meta_path} has no base_model fingerprint; cannot check it fits this model.",
                      stacklevel=3)
    if not weights_path.exists():
        raise AdapterFileError(
            f"{weights_path} is missing next to {META_FILE}; re-save or re-copy the adapter."
        )
    tensors, _ = load_tensors(weights_path)  # first, so a truncated file gets the more specific error
    expected_sha = meta.get("weights_sha256")
    if expected_sha is not None and sha256_file(weights_path) != expected_sha:
        raise AdapterFileError(
            f"{weights_path} does not match the checksum in {META_FILE}: it changed or was corrupted after "
            "saving. Re-copy or re-save the adapter."
        )
    loaded_name = name if name is not None else str(meta.get("name", "default"))
    return attach(model, method, loaded_name, config, meta["targets"], tensors, weights_path, layer_configs)


def _parse_config(method: str, values: Any, source: Path, where: str) -> AdapterConfig:
    if not isinstance(values, dict):
        raise AdapterFileError(f"{source}: {where} is not a JSON object; the file was edited.")
    try:
        return ADAPTERS.get(method).config_class.from_dict(values)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{source}: the saved {method} {where} is invalid: {err}") from None
