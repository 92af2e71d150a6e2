"""One file format for every family: a plan, its tensors and the base it belongs to, as safetensors + JSON.

rankwise format (format_version 2), written for adapters as adapter.safetensors + adapter.json:
    <stem>.safetensors   {"<module path>.<tensor>": tensor}, e.g. "model.layers.0.self_attn.q_proj.lora_A"
    <stem>.json          format_version, rankwise_version, family ("adapter", ...), method, name,
                         config (the config the plan was made from, config.to_dict()),
                         plan {module path: {field: value} where that layer's config differs, else {}},
                         base_model (fingerprint.py), weights_sha256, and settings_sha256: the
                         sha256 of family, method, config and plan, so an edited setting is caught
Format 1 (rankwise ≤ 0.1: config, targets, layer_configs {path: full config}) still loads.
A directory is written as a whole through atomic_directory: a failed or interrupted save leaves the
previous files there untouched. load_adapter picks rankwise's or PEFT's format from the config file.

This module knows formats only. It reaches a family (its method registry, how to apply a plan, what a
model holds) through rankwise._registry.FAMILIES and never imports one.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from .._registry import FAMILIES
from .._version import __version__
from ..errors import AdapterFileError, ConfigError
from .atomic import atomic_directory, save_tensors, write_json
from .fingerprint import check_base, model_fingerprint
from .peft_format import PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, read_peft_adapter, save_peft_adapter
from .readers import SavedAdapter, load_tensors, read_json, sha256_file

FORMAT_VERSION = 2
WEIGHTS_FILE, META_FILE = "adapter.safetensors", "adapter.json"
# Files a save may replace; anything else in the directory means it is not an adapter directory.
ADAPTER_DIR_FILES = {WEIGHTS_FILE, META_FILE, PEFT_WEIGHTS_FILE, PEFT_CONFIG_FILE, "README.md"}
_KNOWN_KEYS = {"format_version", "rankwise_version", "family", "method", "name", "config", "plan",
               "base_model", "weights_sha256", "settings_sha256", "targets", "layer_configs",
               "verify"}  # verify: train.verify's record of the logit differences, not a setting
# Fields every format-1 config held, which methods that do not use them no longer have.
_FORMAT_1_FIELDS = ("rank", "alpha", "dropout")


def rankwise_version() -> str:
    """The installed rankwise version, as written into saved files."""
    return __version__


def settings_digest(meta: dict[str, Any]) -> str:
    """sha256 of what decides a file's outputs besides its tensors: family, method, config and plan."""
    settings = {key: meta.get(key) for key in ("family", "method", "config", "plan")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def plan_overrides(config: Any, plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{path: {field: value}} of each layer's differences from `config` (JSON)."""
    shared = config.to_dict()
    return {path: {k: v for k, v in layer.to_dict().items() if shared.get(k) != v}
            for path, layer in plan.items()}


def refuse_foreign_files(directory: Path) -> None:
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


def plan_record(model: nn.Module, family: str, name: str) -> tuple[dict[str, Any], dict]:
    """(the JSON record, the tensors) of what family `family` installed in `model` under `name`."""
    method, config, plan, tensors = FAMILIES.get(family).layout(model, name)
    record = {"family": family, "method": method, "name": name, "config": config.to_dict(),
              "plan": plan_overrides(config, plan)}
    return record, tensors


def save_adapter(model: nn.Module, directory: str | os.PathLike, name: str = "default", *,
                 format: str = "rankwise") -> Path:
    """Save adapter `name` of `model` into `directory` (created or replaced as a whole); returns it.

    format="rankwise" writes adapter.safetensors + adapter.json; format="peft" writes PEFT's
    adapter_model.safetensors + adapter_config.json (lora, rslora, dora; pissa as a rank-2r LoRA and
    lora-xs as a LoRA; other methods raise ConfigError). Raises AdapterFileError if `directory` holds
    files other than an adapter's, since the whole directory is replaced.
    """
    directory = Path(directory)
    if format not in ("rankwise", "peft"):
        raise ConfigError(f"unknown adapter file format {format!r}; use 'rankwise' or 'peft'.")
    record, tensors = plan_record(model, "adapter", name)
    refuse_foreign_files(directory)
    if format == "peft":
        return save_peft_adapter(model, directory, record, tensors, rankwise_version())
    return write_adapter(directory, record, tensors, model_fingerprint(model, list(record["plan"])))


def write_adapter(directory: str | os.PathLike, record: dict[str, Any], tensors: dict,
                  base_model: dict | None) -> Path:
    """Write one plan record (plan_record's) and its tensors as a rankwise adapter folder, atomically."""
    directory = Path(directory)
    refuse_foreign_files(directory)
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "rankwise_version": rankwise_version(),
                            **record}
    if base_model is not None:
        meta["base_model"] = base_model
    meta["settings_sha256"] = settings_digest(record)
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
    saved = read_adapter(directory)
    if saved.base_model is not None:
        check_base(saved.base_model, model, allow_base_mismatch, saved.base_source)
    else:
        warnings.warn(saved.unchecked, stacklevel=2)
    FAMILIES.get("adapter").apply(model, saved.method, name if name is not None else saved.name,
                                  saved.config, saved.plan, saved.state, saved.source)
    return model


def read_adapter(directory: str | os.PathLike) -> SavedAdapter:
    """The adapter in `directory` (rankwise or PEFT format), with every check its files allow (checksums,
    settings, tensors readable) made without a model; load_adapter adds the base-model check."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AdapterFileError(f"{directory} is not a directory; pass the directory save_adapter wrote.")
    if (directory / META_FILE).exists():
        return _read_rankwise(directory)
    if (directory / PEFT_CONFIG_FILE).exists():
        return read_peft_adapter(directory)
    present = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    raise AdapterFileError(
        f"{directory} has neither {META_FILE} (rankwise) nor {PEFT_CONFIG_FILE} (PEFT); it holds "
        f"{present or 'nothing'}. Point load_adapter at the directory save_adapter wrote."
    )


def check_record(meta: dict[str, Any], source: Path, family: str) -> int:
    """Validate a plan record's keys and types; returns its format version."""
    version = meta.get("format_version", 1)  # absent: the oldest format
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise AdapterFileError(f"{source}: format_version {version!r} is not a positive integer.")
    if version > FORMAT_VERSION:
        raise AdapterFileError(
            f"{source} was written by rankwise {meta.get('rankwise_version', '?')} in format "
            f"{version}; this rankwise {rankwise_version()} reads formats up to {FORMAT_VERSION}. "
            "Upgrade rankwise."
        )
    required = ("method", "config", "targets") if version == 1 else ("family", "method", "config", "plan")
    missing = [key for key in required if key not in meta]
    if missing:
        raise AdapterFileError(f"{source} lacks {missing}; it is not a rankwise file or was edited.")
    kinds = (("family", str), ("method", str), ("config", dict), ("plan", dict), ("targets", list),
             ("layer_configs", dict))
    wrong_types = [key for key, kind in kinds if key in meta and not isinstance(meta[key], kind)]
    if not wrong_types and version == 1 and not all(isinstance(path, str) for path in meta["targets"]):
        wrong_types = ["targets"]
    if wrong_types:
        raise AdapterFileError(f"{source}: {wrong_types} has the wrong JSON type; the file was edited.")
    if version > 1 and not all(isinstance(values, dict) for values in meta["plan"].values()):
        raise AdapterFileError(f"{source}: every plan entry must be a JSON object; the file was edited.")
    if meta.get("family", "adapter") != family:
        raise AdapterFileError(f"{source} holds a {meta['family']!r} file, not an {family}; load it with "
                               f"the {meta['family']} family's loader (rankwise.models.load for a model "
                               "folder).")
    name = meta.get("name", "default")
    if not isinstance(name, str) or not name or "." in name:
        raise AdapterFileError(f"{source}: {family} name {name!r} must be a non-empty string without '.'.")
    unknown = sorted(set(meta) - _KNOWN_KEYS)
    if unknown:
        warnings.warn(f"{source}: ignoring unknown keys {unknown} (written by a newer rankwise?).",
                      stacklevel=4)
    methods = FAMILIES.get(family).methods
    if meta["method"] not in methods:
        raise AdapterFileError(
            f"{source} holds a {meta['method']!r} {family}, a method this rankwise {rankwise_version()} does "
            f"not know (it knows {', '.join(methods.names())}). Upgrade rankwise or import the module that "
            "registers it."
        )
    return version


def parse_plan(meta: dict[str, Any], source: Path, family: str) -> tuple[Any, dict[str, Any]]:
    """(config, {path: layer config}) of a checked record, in either format version."""
    version = check_record(meta, source, family)
    config_class = FAMILIES.get(family).methods.get(meta["method"]).config_class
    dropped = _FORMAT_1_FIELDS if version == 1 else ()

    def parse(values: Any, where: str) -> Any:
        if not isinstance(values, dict):
            raise AdapterFileError(f"{source}: {where} is not a JSON object; the file was edited.")
        try:
            return config_class.from_dict(values, dropped=dropped)
        except (ConfigError, TypeError) as err:
            raise ConfigError(f"{source}: the saved {meta['method']} {where} is invalid: {err}") from None

    config = parse(meta["config"], "config")
    if version == 1:
        layer_configs = meta.get("layer_configs", {})
        stray = sorted(set(layer_configs) - set(meta["targets"]))
        if stray:
            raise AdapterFileError(f"{source}: layer_configs names modules not in targets: {stray[:5]}.")
        plan = {path: parse(layer_configs[path], f"layer_configs[{path!r}]")
                if path in layer_configs else config for path in meta["targets"]}
    else:
        plan = {path: parse({**meta["config"], **overrides}, f"plan[{path!r}]") if overrides else config
                for path, overrides in meta["plan"].items()}
    if not plan and not getattr(config, "modules_to_save", None):  # an adapter of copies only has none
        raise AdapterFileError(f"{source} lists no modules; it is empty or was edited.")
    return config, plan


def _read_rankwise(directory: Path) -> SavedAdapter:
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    meta = read_json(meta_path)
    config, plan = parse_plan(meta, meta_path, "adapter")
    if meta.get("format_version", 1) >= 2 and meta.get("settings_sha256") != settings_digest(meta):
        raise AdapterFileError(
            f"{meta_path}: its method, config or plan no longer match the settings_sha256 written with them "
            "(edited after saving, or the checksum was removed); the outputs would differ from the trained "
            "adapter's. Re-save it from the model, or re-copy the folder.")
    if not weights_path.exists():
        raise AdapterFileError(
            f"{weights_path} is missing next to {META_FILE}; re-save or re-copy the adapter."
        )
    tensors, _ = load_tensors(weights_path)  # first, so a truncated file gets the more specific error
    expected_sha = meta.get("weights_sha256")
    if expected_sha is None and meta.get("format_version", 1) >= 2:
        raise AdapterFileError(f"{meta_path} has no weights_sha256, which every format-2 file carries; the "
                               "file was edited. Re-save or re-copy the adapter.")
    if expected_sha is not None and sha256_file(weights_path) != expected_sha:
        raise AdapterFileError(
            f"{weights_path} does not match the checksum in {META_FILE}: it changed or was corrupted after "
            "saving. Re-copy or re-save the adapter."
        )
    return SavedAdapter(meta["method"], str(meta.get("name", "default")), config, plan, tensors,
                        meta.get("base_model"), weights_path, meta_path,
                        f"{meta_path} has no base_model fingerprint; cannot check it fits this model.")
