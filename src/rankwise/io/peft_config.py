"""PEFT LoraConfig (adapter_config.json) <-> rankwise config, with every PEFT field accounted for.

Import accepts a field only if rankwise computes the same thing with it: fields that change what
the adapter computes must hold their neutral value, or the import fails naming the field. Fields
that only choose targets (the file's tensor names give the exact targets), describe the file, or
steer training-time initialisation are ignored. Fields this list has never seen (a newer PEFT) are
ignored when empty and warned about, once, when set.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Any

from .._registry import FAMILIES
from ..errors import AdapterFileError, ConfigError
from ..surgery import pattern_value

# Fields that must be empty/neutral, with what they would have meant.
_UNSUPPORTED = {
    "lora_bias": "a trainable bias on lora_B",
    "modules_to_save": "full copies of extra modules",
    "use_qalora": "QA-LoRA pooling",
    "use_bdlora": "block-diagonal LoRA",
    "alora_invocation_tokens": "activated LoRA (adapter active after an invocation only)",
    "layer_replication": "replicated layers",
    "trainable_token_indices": "trainable embedding rows",
    "target_parameters": "LoRA on raw nn.Parameters",
    "megatron_config": "Megatron tensor-parallel layers",
    "arrow_config": "Arrow routing between LoRAs",
    "kasa_config": "KaSA singular-value adaptation",
    "monteclora_config": "Monte Carlo LoRA sampling",
}
# init_lora_weights values that only initialise A and B; the others (pissa*, olora, corda, loftq,
# lora_ga, mica) rewrite the base weights or freeze factors, so the file is not a plain LoRA on the base.
_PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")
_IGNORED = {
    "peft_type", "task_type", "peft_version", "auto_mapping", "base_model_name_or_path", "revision",
    "inference_mode", "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern",
    "r", "lora_alpha", "lora_dropout", "use_rslora", "use_dora", "bias", "init_lora_weights",
    "rank_pattern", "alpha_pattern",  # applied per layer by layer_configs_from_peft
    "megatron_core", "loftq_config", "eva_config", "corda_config", "lora_ga_config", "qalora_group_size",
    "ensure_weight_tying", "runtime_config",
    "velora_config",  # VeLoRA changes only the backward pass (PEFT's field help); outputs are LoRA's
    # PEFT derives it per layer from the layer's type (True for GPT-2's Conv1D, False for nn.Linear,
    # unused by embeddings and convs), whatever the file says; rankwise reads the layout from the module.
    "fan_in_fan_out",
}


def _is_empty(value: Any) -> bool:
    return value is None or value is False or value == {} or value == [] or value == ""


def _method_for(cfg: dict[str, Any], source: Path) -> str:
    if cfg.get("use_dora") and cfg.get("use_rslora"):
        raise ConfigError(
            f"{source}: use_dora and use_rslora are both true; rankwise's dora uses alpha / r scaling, "
            "so this combination does not import."
        )
    return "dora" if cfg.get("use_dora") else "rslora" if cfg.get("use_rslora") else "lora"


def rankwise_config_from_peft(cfg: dict[str, Any], source: Path) -> tuple[str, Any]:
    """(method, config) for a PEFT adapter_config.json; raises naming the first unsupported field."""
    peft_type = cfg.get("peft_type")
    if peft_type is None:
        raise AdapterFileError(f"{source} has no peft_type; it is not a PEFT adapter config.")
    if peft_type != "LORA":
        raise ConfigError(
            f"{source} is a PEFT {peft_type} adapter (peft_type={peft_type!r}); rankwise imports peft_type "
            "'LORA' adapters (LoRA, rsLoRA, DoRA) only."
        )
    for field, meaning in _UNSUPPORTED.items():
        if not _is_empty(cfg.get(field)):
            raise ConfigError(
                f"{source}: {field}={cfg[field]!r} ({meaning}) is not supported by rankwise's PEFT import; "
                f"only plain LoRA, rsLoRA and DoRA (on linear, embedding and conv layers) import. Re-train "
                f"without {field}."
            )
    if cfg.get("bias", "none") != "none":
        raise ConfigError(
            f"{source}: bias={cfg['bias']!r} trains base biases; rankwise imports bias='none' only."
        )
    init = cfg.get("init_lora_weights", True)
    if init not in _PLAIN_INITS:
        raise ConfigError(
            f"{source}: init_lora_weights={init!r} rewrites the base weights (or selects a LoRA variant), "
            "so the file only works with PEFT's modified base. Convert it to a plain LoRA first (PEFT's "
            "save_pretrained with path_initial_model_for_weight_conversion), then import that."
        )
    for field in ("rank_pattern", "alpha_pattern"):  # fail before reading the weights
        _pattern(cfg, field, source)
    known = _IGNORED | set(_UNSUPPORTED)
    unknown = sorted(key for key, value in cfg.items() if key not in known and not _is_empty(value))
    if unknown:
        warnings.warn(
            f"{source}: ignoring PEFT fields {unknown} that this rankwise does not know (newer PEFT?); "
            "if they change what the adapter computes, outputs will differ.", stacklevel=4,
        )
    method = _method_for(cfg, source)
    try:
        config = FAMILIES.get("adapter").methods.get(method).config_class(
            rank=cfg.get("r", 8), alpha=float(cfg.get("lora_alpha", 8)),
            dropout=float(cfg.get("lora_dropout", 0.0)),
        )
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{source}: invalid LoRA settings: {err}") from None
    return method, config


def _pattern(cfg: dict[str, Any], field: str, source: Path) -> dict[str, Any]:
    patterns = cfg.get(field) or {}
    if not isinstance(patterns, dict):
        raise ConfigError(f"{source}: {field} must be a JSON object of regex -> value, got {patterns!r}.")
    for key in patterns:
        try:
            re.compile(key)
        except re.error as err:
            raise ConfigError(f"{source}: {field} key {key!r} is not a valid regex ({err}).") from None
    return patterns


def layer_configs_from_peft(cfg: dict[str, Any], config: Any, targets: list[str],
                            source: Path) -> dict[str, Any]:
    """{path: config} for every target, with PEFT's rank_pattern / alpha_pattern applied per layer."""
    ranks, alphas = _pattern(cfg, "rank_pattern", source), _pattern(cfg, "alpha_pattern", source)
    plan = {}
    for path in targets:
        rank = pattern_value(ranks, path, config.rank)
        alpha = pattern_value(alphas, path, config.alpha)
        try:
            alpha = float(alpha) if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) else alpha
            plan[path] = dataclasses.replace(config, rank=rank, alpha=alpha) \
                if (rank, alpha) != (config.rank, config.alpha) else config
        except (TypeError, ValueError, OverflowError) as err:
            raise ConfigError(
                f"{source}: rank_pattern/alpha_pattern give {path} invalid settings: {err}"
            ) from None
    return plan


def peft_patterns(config: dict[str, Any], plan: dict[str, dict[str, Any]],
                  factor: int) -> tuple[dict[str, int], dict[str, float]]:
    """PEFT's (rank_pattern, alpha_pattern) for the plan's layers whose rank or alpha differ from `config`."""
    ranks, alphas = {}, {}
    for path, overrides in plan.items():
        free = {"rank", "alpha", "targets", "exclude", "rank_pattern", "alpha_pattern"}
        other = sorted(set(overrides) - free)
        if other:
            raise ConfigError(
                f"{path} differs from the adapter's other layers in more than rank and alpha "
                f"({', '.join(other)}); PEFT's file format has per-layer rank_pattern and alpha_pattern "
                "only. "
                "Save with format='rankwise'."
            )
        key = re.escape(path)  # PEFT matches "(.*\.)?(key)$": a full path matches only itself
        if "rank" in overrides:
            ranks[key] = overrides["rank"] * factor
        if "alpha" in overrides:
            alphas[key] = _json_number(overrides["alpha"] * factor)
    return ranks, alphas


def _json_number(value: float) -> int | float:
    # PEFT declares lora_alpha an int; write one when exact so the file looks like PEFT's own.
    return int(value) if float(value).is_integer() else value


def peft_config_for(method: str, config: dict[str, Any], rank: int, alpha: float, targets: list[str],
                    base_name: str | None, rank_pattern: dict | None = None,
                    alpha_pattern: dict | None = None) -> dict[str, Any]:
    """The adapter_config.json PEFT needs to rebuild this adapter (PEFT fills the other fields)."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_name,
        "revision": None,
        "r": rank,
        "lora_alpha": _json_number(alpha),
        "lora_dropout": config["dropout"],
        "target_modules": targets,  # full module paths: PEFT matches them exactly
        "use_rslora": method == "rslora",
        "use_dora": method == "dora",
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "lora_bias": False,
        "modules_to_save": None,
        "rank_pattern": rank_pattern or {},
        "alpha_pattern": alpha_pattern or {},
        "exclude_modules": None,
        "layers_to_transform": None,
        "layers_pattern": None,
    }
