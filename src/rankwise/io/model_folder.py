"""A whole model, with whatever every family did to it, as one folder: the format compressed,
reparameterized and re-architected models are saved in, and one way to ship a model with its adapters.

    save_model(model, "out/model", tokenizer)         # rankwise.io
    model, tokenizer = rankwise.models.load("out/model")

Layout (safetensors + JSON only):
    config.json, tokenizer files   the transformers config (and tokenizer), as save_pretrained writes them
    model.safetensors              the base model's own tensors under their usual names, tied copies
                                   once; the modules a family replaced are left out, wrapped ones are
                                   saved unwrapped, so the folder is also a plain Hugging Face folder
    rankwise.safetensors           each family's tensors, "<family>/<name>/<module path>.<tensor>"
    rankwise.json                  format_version, rankwise_version, records: one plan record per installed
                                   family and name, in the order they are applied (io.adapter_file's
                                   family, method, name, config, plan), and the sha256 of both tensor files
Loading builds the base with transformers' own loader, then applies each record through its family's
factory (rankwise._registry.FAMILIES), checking every tensor before the model changes.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from torch import nn

from .._registry import FAMILIES
from ..errors import AdapterFileError, ConfigError
from ..surgery import wrappers
from .adapter_file import FORMAT_VERSION, parse_plan, plan_record, rankwise_version
from .atomic import atomic_directory, save_tensors, write_json
from .fingerprint import base_name
from .readers import load_tensors, read_json, sha256_file

META_FILE, FAMILY_WEIGHTS, BASE_WEIGHTS = "rankwise.json", "rankwise.safetensors", "model.safetensors"


def is_model_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / META_FILE).is_file()


def _records(model: nn.Module) -> list[tuple[dict[str, Any], dict]]:
    found = []
    for family in sorted(FAMILIES.names(), key=lambda name: FAMILIES.get(name).order):
        for name in FAMILIES.get(family).installed(model):
            found.append(plan_record(model, family, name))
    return found


def base_state(model: nn.Module, replaced: list[str]) -> dict:
    """The model's own tensors named as if no family had touched it, without the modules at the paths
    in `replaced` (a family saves those itself) and without tied copies."""
    wrapped = wrappers(model)
    state, seen = {}, set()
    for key, value in model.state_dict(keep_vars=True).items():
        name = base_name(key, wrapped) if wrapped else key
        if name is None or any(name.startswith(path + ".") for path in replaced):
            continue
        if value.data_ptr() in seen:  # a tied weight (lm_head = embed_tokens): transformers re-ties it
            continue
        seen.add(value.data_ptr())
        state[name] = value.detach()
    return state


def save_model(model: nn.Module, directory: str | os.PathLike, tokenizer=None,
               extra_json: dict[str, Any] | None = None) -> Path:
    """Save a transformers `model` with every family's changes (and `tokenizer`) into `directory`.
    `extra_json` ({file name: data}) adds JSON files such as a report, written in the same atomic step."""
    directory = Path(directory)
    if not hasattr(model, "config") or not hasattr(model.config, "save_pretrained"):
        raise ConfigError("save_model needs a transformers model (it writes its config.json); for other "
                          "modules save the adapters with save_adapter.")
    if any(wrapper.base_is_modified() for wrapper in wrappers(model).values()):
        raise ConfigError("the model has merged adapters; unmerge first (rankwise.unmerge), or fold them in "
                          "for good with rankwise.unload(model, merge=True), then save.")
    records = _records(model)
    family_tensors = {f"{record['family']}/{record['name']}/{key}": value
                      for record, tensors in records for key, value in tensors.items()}
    replaced = [path for record, _ in records if FAMILIES.get(record["family"]).replaces
                for path in record["plan"]]
    if directory.exists() and any(directory.iterdir()) and not is_model_folder(directory):
        raise AdapterFileError(f"{directory} holds other files; save the model into a new or empty folder "
                               "(a save replaces the whole folder).")
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]  # as save_pretrained records it: which class to rebuild
    with atomic_directory(directory) as tmp:
        config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_tensors(tmp / BASE_WEIGHTS, base_state(model, replaced), metadata={"format": "pt"})
        save_tensors(tmp / FAMILY_WEIGHTS, family_tensors, metadata={"format": "pt"})
        write_json(tmp / META_FILE, {
            "format_version": FORMAT_VERSION, "rankwise_version": rankwise_version(),
            "records": [record for record, _ in records],
            "sha256": {file: sha256_file(tmp / file) for file in (BASE_WEIGHTS, FAMILY_WEIGHTS)},
        })
        for file, data in (extra_json or {}).items():
            write_json(tmp / file, data)
    return directory


def load_model(directory: str | os.PathLike, build) -> nn.Module:
    """The model saved in `directory`: `build(directory)` loads the base (a transformers loader), then
    every record is applied in order through its family."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    meta = read_json(meta_path)
    records = meta.get("records")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise AdapterFileError(f"{meta_path} has no list of records; it is not a rankwise model folder "
                               "or was edited.")
    for file, digest in (meta.get("sha256") or {}).items():
        if not (directory / file).is_file() or sha256_file(directory / file) != digest:
            raise AdapterFileError(f"{directory / file} is missing or does not match the checksum in "
                                   f"{META_FILE}; re-copy or re-save the model.")
    family_tensors, _ = load_tensors(directory / FAMILY_WEIGHTS)
    parsed = []
    for index, record in enumerate(records):
        family = record.get("family")
        if not isinstance(family, str) or family not in FAMILIES:
            raise AdapterFileError(f"{meta_path}: record {index} is of family {family!r}, which this "
                                   f"rankwise {rankwise_version()} does not know "
                                   f"({', '.join(FAMILIES.names())}).")
        config, plan = parse_plan({"format_version": meta.get("format_version"), **record}, meta_path, family)
        prefix = f"{family}/{record['name']}/"
        state = {key[len(prefix):]: value for key, value in family_tensors.items() if key.startswith(prefix)}
        parsed.append((record, config, plan, state))
    model = build(directory)
    for record, config, plan, state in parsed:
        FAMILIES.get(record["family"]).apply(model, record["method"], record["name"], config, plan, state,
                                            directory / FAMILY_WEIGHTS)
    return model
