"""Safe readers for the only two formats rankwise reads: safetensors and JSON. Nothing is unpickled.

Every failure becomes an AdapterFileError naming the file and saying what to do, instead of a bare
SafetensorError / JSONDecodeError / UnicodeDecodeError from deep inside a load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import AdapterFileError

__all__ = ["SavedAdapter", "check_state", "load_tensors", "read_json", "sha256_file"]


@dataclass
class SavedAdapter:
    """An adapter folder (rankwise or PEFT format) as read and checked from its files alone, before any
    model is involved: what load_adapter applies, and what post-hoc tools (LoRA-Squeeze) transform."""

    method: str
    name: str
    config: Any  # the config the plan was made from
    plan: dict[str, Any]  # {module path: that layer's config}
    state: dict[str, torch.Tensor]  # {"<module path>.<tensor>": tensor}
    base_model: dict | None  # the base-model fingerprint, if the file carries one
    source: Path  # the weights file, for error messages
    base_source: Path  # the file the fingerprint was read from, for a mismatch's message
    unchecked: str = ""  # the warning to give when base_model is None

_SAFETENSORS_MIN_BYTES = 8  # the little-endian u64 header length alone


def _require_file(path: Path) -> None:
    if not path.exists():
        raise AdapterFileError(f"{path} does not exist; check the path, or save the adapter first.")
    if not path.is_file():
        raise AdapterFileError(f"{path} is not a regular file.")
    if not os.access(path, os.R_OK):
        raise AdapterFileError(f"{path} cannot be read (permission denied); fix its permissions.")


def load_tensors(path: str | os.PathLike,
                 device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file into ({name: tensor}, metadata). Truncated or corrupted files raise.

    safetensors validates the header (length, JSON, offsets, dtype × shape == byte span) and refuses
    files whose data is shorter or longer than declared, so a truncated copy never loads partially.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _require_file(path)
    size = path.stat().st_size
    if size < _SAFETENSORS_MIN_BYTES:
        raise AdapterFileError(
            f"{path} is truncated ({size} bytes; a safetensors file has at least an 8-byte header). "
            "Re-save or re-copy it."
        )
    try:
        with safe_open(str(path), framework="pt", device=device) as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise AdapterFileError(
            f"{path} is not a valid safetensors file ({err}); it is truncated or corrupted. "
            "Re-save or re-copy it."
        ) from err
    return tensors, metadata


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    duplicates = sorted(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
    if duplicates:
        # Last-one-wins would let two tools read one file differently; refuse instead.
        raise ValueError(f"duplicate key(s) {duplicates}")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    # Python's json accepts NaN / Infinity, which are not JSON and slip past `alpha > 0`-style checks.
    raise ValueError(f"non-finite number {name}")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object (duplicate keys, NaN/Infinity, non-UTF-8 bytes and non-objects are errors)."""
    path = Path(path)
    _require_file(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise AdapterFileError(f"{path} cannot be read ({err.strerror or err}); fix its permissions or "
                               "re-copy it.") from None
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys,
                         parse_constant=_no_constants)
    except RecursionError:
        raise AdapterFileError(f"{path} nests JSON too deeply to be a rankwise file; it is corrupted.") \
            from None
    except UnicodeDecodeError as err:
        raise AdapterFileError(f"{path} is not UTF-8 text (byte {err.start}); it is corrupted.") from err
    except json.JSONDecodeError as err:
        raise AdapterFileError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "it is truncated or was edited by hand. Re-save it or fix the JSON."
        ) from err
    except ValueError as err:
        raise AdapterFileError(f"{path}: {err}; fix or re-save the file.") from err
    if not isinstance(obj, dict):
        raise AdapterFileError(f"{path} holds a JSON {type(obj).__name__}, expected an object.")
    return obj


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_SHOWN = 5  # how many names of each problem an error lists


def check_state(expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, torch.Tensor],
                source: str | os.PathLike) -> None:
    """Raise AdapterFileError listing missing, unexpected and misshapen tensors (first few of each)."""
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    misshapen = [
        f"{key} {tuple(value.shape)} in the file vs {expected[key]} in this model"
        for key, value in tensors.items() if key in expected and tuple(value.shape) != tuple(expected[key])
    ]
    if not (missing or unexpected or misshapen):
        return
    parts = [
        f"{len(found)} {what}: {', '.join(found[:_SHOWN])}{', ...' if len(found) > _SHOWN else ''}"
        for what, found in (
            ("missing", missing), ("unexpected", unexpected), ("with the wrong shape", misshapen)
        )
        if found
    ]
    matched = len(tensors) - len(unexpected)
    raise AdapterFileError(
        f"{source} does not fit this model ({matched}/{len(tensors)} tensors match an adapted layer): "
        + "; ".join(parts)
        + ". The file was saved for another model, rank or method, or was edited; load it onto the "
        "model and method it was trained for."
    )
