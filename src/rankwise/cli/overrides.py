"""Command-line settings: a config file plus `key=value`, `--key value` and `--key=value` overrides.

Keys may be spelled with `_` or `-` and use the aliases TrainConfig accepts. Values are read as JSON
where that makes sense (8, 1e-3, true, null, ["q_proj","v_proj"]) and as plain text otherwise; a
text-valued key keeps its text as is. Dotted keys set one entry of a dict field:
`method_config.svd_iters=4`. Boolean keys also work as bare flags: `--progress`, `--no-progress`.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from ..errors import ConfigError
from ..train.config import FIELD_TYPES, canonical_key, read_config_file

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _kinds(name: str | None) -> tuple:
    hint = FIELD_TYPES.get(name) if name else None
    if hint is None:
        return ()
    return typing.get_args(hint) or (hint,)


def parse_value(key: str, text: str) -> Any:
    """The value `text` stands for, given the type of the config key it is for."""
    kinds = _kinds(canonical_key(key))
    if type(None) in kinds and text.lower() in ("null", "none"):
        return None
    if bool in kinds:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"{key} takes true or false, got {text!r}.")
    if str in kinds and not text.lstrip().startswith(("[", "{")):
        return text  # model names, paths, regexes: never re-read as numbers
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # TrainConfig's type check then says what was expected


def parse_overrides(tokens: list[str]) -> list[tuple[str, Any]]:
    """[(key, value)] from `key=value`, `--key=value`, `--key value`, `--flag`, `--no-flag` tokens."""
    pairs, i = [], 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.startswith("--"):
            key, eq, text = token[2:].partition("=")
            if not eq:
                name = canonical_key(key)
                negated = canonical_key(key[3:]) if key.startswith("no-") or key.startswith("no_") else None
                if negated and bool in _kinds(negated):
                    pairs.append((key[3:], False))
                    continue
                nxt = tokens[i] if i < len(tokens) else None
                if bool in _kinds(name) and (nxt is None or nxt.lower() not in _TRUE | _FALSE):
                    pairs.append((key, True))
                    continue
                if nxt is None:
                    raise ConfigError(f"--{key} needs a value: --{key} VALUE or {key}=VALUE.")
                text, i = nxt, i + 1
        elif "=" in token:
            key, _, text = token.partition("=")
        else:
            raise ConfigError(f"cannot read {token!r}: write settings as key=value or --key value.")
        if not key:
            raise ConfigError(f"{token!r} has no key before '='.")
        pairs.append((key, parse_value(key.partition(".")[0], text)))
    return pairs


def resolve_settings(config_path: str | None, tokens: list[str]) -> dict[str, Any]:
    """The config file's settings with the overrides applied on top, later ones winning."""
    values = read_config_file(config_path) if config_path else {}
    for key, value in parse_overrides(tokens):
        head, dot, sub = key.partition(".")
        name = canonical_key(head)
        # Drop any other spelling of the same key first (e.g. the file's "lora_r" when given rank=4).
        same = [k for k in values if name is not None and canonical_key(k) == name]
        if dot:
            if name is None or dict not in _kinds(name):
                raise ConfigError(f"{key}: only dict settings (method_config, rank_pattern, ...) "
                                  "take dotted keys.")
            merged = dict(next((values[k] for k in same if isinstance(values[k], dict)), {}))
            # method_config and optimizer_config keys are field names (dashes allowed);
            # pattern keys are regexes, kept as written
            merged[sub.replace("-", "_") if name.endswith("_config") else sub] = value
            value, head = merged, name
        for k in same:
            del values[k]
        values[head] = value
    return values
