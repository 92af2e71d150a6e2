"""TrainConfig: every setting of a fine-tuning run, in the Hugging Face / PEFT vocabulary.

Validation happens at construction, before any weights are loaded, and every error names the key,
what was wrong and what to write instead. `from_dict` also accepts the spellings users bring from
other tools (`lora_r`, `target_modules`, `save_steps`, `resume_from_checkpoint`, dashes for underscores).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def _opt(default: Any, help: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class TrainConfig:
    """One fine-tuning run. Build with TrainConfig(...) or TrainConfig.from_dict({...})."""

    model: str = _opt("smollm2-135m", "model name (smollm2-135m, minilm-l6, tiny-llama) or a local HF folder")
    method: str = _opt("lora", "adapter method, one of `rankwise methods`")
    # null: the method's own default (most use rank 8, alpha 16, all-linear; block adapters all-blocks)
    rank: int | None = _opt(None, "adapter rank (null: the method's default)")
    alpha: float | None = _opt(None, "adapter scale numerator; LoRA scales by alpha / rank (null: method's)")
    dropout: float | None = _opt(None, "dropout on the adapter's input (null: the method's default)")
    targets: str | list[str] | None = _opt(
        None, "modules to adapt: all-linear, all-blocks, a regex, or a list of names/globs (null: method's)")
    rank_pattern: dict | None = _opt(None, "per-layer ranks, {regex on the module path: rank} (PEFT's rule)")
    alpha_pattern: dict | None = _opt(None, "per-layer alphas, {regex on the module path: alpha}")
    layers_to_transform: list[int] | None = _opt(None, "adapt only the blocks with these indices (null: all)")
    modules_to_save: list[str] | None = _opt(
        None, "modules trained in full beside the adapter, e.g. [\"lm_head\"] (PEFT's modules_to_save)")
    method_config: dict = field(
        default_factory=dict, metadata={"help": "method-specific config fields, e.g. {\"svd_iters\": 4}"})
    adapter_name: str = _opt("default", "name the adapter is attached and saved under")
    task: str | list[str] | None = _opt(
        None,
        "a bundled task (see rankwise.data.list_tasks()), or a list of tasks learned in order; or give data=")
    data: str | list[str] | None = _opt(
        None, "a JSONL/CSV file of prompt/answer rows, or a list of files learned in order; or give task=")
    eval_data: str | None = _opt(None, "held-out file for data=; default: the last eval_split of data")
    prompt_field: str = _opt("prompt", "column of data holding the prompt")
    answer_field: str = _opt("answer", "column of data holding the answer")
    eval_split: float = _opt(0.1, "fraction of data= held out for evaluation when eval_data is unset")
    eval_size: int | None = _opt(None, "evaluate on at most this many held-out examples (null: all)")
    max_length: int = _opt(256, "tokens per training example (longer ones are truncated)")
    optimizer: str = _opt("adamw", "optimizer, one of rankwise.optim.OPTIMIZERS (adamw, sgd, ...)")
    optimizer_config: dict = field(
        default_factory=dict, metadata={"help": "the optimizer's own options, e.g. {\"betas\": [0.9, 0.95]}"})
    learning_rate: float = _opt(2e-4, "peak learning rate")
    weight_decay: float = _opt(0.0, "decoupled weight decay (AdamW) or L2 (SGD)")
    warmup_steps: int = _opt(0, "linear warmup steps (or set warmup_ratio)")
    warmup_ratio: float = _opt(0.0, "warmup as a fraction of max_steps (or set warmup_steps)")
    max_steps: int = _opt(100, "optimizer steps to train")
    per_device_train_batch_size: int = _opt(8, "examples per process per micro-batch")
    gradient_accumulation_steps: int = _opt(1, "micro-batches per optimizer step")
    max_grad_norm: float = _opt(1.0, "clip the gradient norm to this (0: no clipping)")
    seed: int = _opt(42, "seed of the adapter init, data order and dropout")
    init_batches: int = _opt(4, "micro-batches shown to data-driven inits (init_from_data)")
    output_dir: str = _opt("runs/rankwise", "where adapter, log, plot, results and checkpoints go")
    eval_every: int = _opt(0, "exact-match eval every N steps (0: only base and final)")
    save_every: int = _opt(0, "checkpoint every N steps (0: no checkpoints)")
    save_total_limit: int | None = _opt(2, "keep at most this many checkpoints (null: all)")
    resume: str | None = _opt(None, "\"latest\" or a checkpoint folder to continue from")
    max_new_tokens: int = _opt(16, "tokens generated per answer during evaluation")
    eval_batch_size: int = _opt(16, "prompts per generation batch during evaluation")
    eval_base: bool = _opt(True, "score the base model before training (false: skip it, e.g. in sweeps)")
    progress: bool = _opt(True, "show progress bars")
    precision: str = _opt("fp32", "fp32, bf16 (autocast, CPU or GPU) or fp16 (autocast, GPU only); the "
                          "trained tensors stay fp32")
    gradient_checkpointing: bool = _opt(False, "recompute each block's activations in the backward pass "
                                               "(less memory, about a third more time)")
    fsdp: bool = _opt(False, "under torchrun, shard parameters, gradients and optimizer state across the "
                             "processes (PyTorch FSDP2) instead of copying the model to each")
    report_to: str | list[str] | None = _opt(None, "trackers through accelerate: tensorboard, wandb, mlflow, "
                                                   "trackio (each must be installed); the JSONL log stays")
    quantize_bits: int | None = _opt(None, "quantize the base's linear layers (not lm_head) to 4 or 8 bits "
                                     "before the adapter goes on, QLoRA-style (null: full precision)")
    quantize_group_size: int = _opt(64, "weights sharing one quantization scale")
    quantize_backend: str = _opt("rankwise", "rankwise (group-wise RTN; also 2 or 3 bits) or bitsandbytes "
                                 "(NF4 / LLM.int8; pip install bitsandbytes)")
    verify: bool = _opt(True, "after training, compare the adapter's logits unmerged, merged, in PEFT and "
                              "merged in plain transformers (rankwise verify), recorded in adapter.json")

    def __post_init__(self) -> None:
        if self.method_config is None:
            self.method_config = {}
        if self.optimizer_config is None:
            self.optimizer_config = {}
        for f in dataclasses.fields(self):
            setattr(self, f.name, checked_type(f.name, getattr(self, f.name), FIELD_TYPES[f.name]))
        _check_values(self)

    def adapter_config(self):
        """The method's own config dataclass, built from the shared fields plus method_config."""
        from ..adapters import ADAPTERS

        cls = ADAPTERS.get(self.method).config_class
        known = cls.field_names()
        shared = {k: getattr(self, k) for k in SHARED_FIELDS if getattr(self, k) is not None}
        unused = sorted(set(shared) - known)
        if unused:
            raise ConfigError(f"{self.method} does not use {', '.join(unused)}; remove "
                              f"{'it' if len(unused) == 1 else 'them'} from the config.")
        unknown = sorted(set(self.method_config) - known)
        if unknown:
            raise ConfigError(f"method_config has {unknown}, which {self.method} does not take; "
                              f"its fields are {sorted(known - set(SHARED_FIELDS))}.")
        clash = sorted(set(self.method_config) & set(SHARED_FIELDS))
        if clash:
            raise ConfigError(f"set {clash} at the top level of the config, not in method_config.")
        return cls(**shared, **self.method_config)

    def sequence(self) -> list[TrainConfig]:
        """One single-task config per task (or data file) of a continual-learning list, in order."""
        if isinstance(self.task, list):
            return [dataclasses.replace(self, task=task) for task in self.task]
        if isinstance(self.data, list):
            return [dataclasses.replace(self, data=path) for path in self.data]
        return [self]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, accepting aliases and dash spellings; unknown keys raise with close names."""
        resolved: dict[str, Any] = {}
        unknown = []
        for key, value in values.items():
            if not isinstance(key, str):
                raise ConfigError(f"config key {key!r} is not text; keys are setting names such as 'rank'.")
            name = canonical_key(key)
            if name is None:
                unknown.append(key)
            elif name in resolved:
                raise ConfigError(f"{key!r} sets {name!r}, which is already set; keep one of the two.")
            else:
                resolved[name] = value
        if unknown:
            method = resolved.get("method", "lora")
            raise ConfigError("; ".join(_unknown_key_message(k, method) for k in unknown))
        return cls(**resolved)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a JSON (or, with PyYAML installed, YAML) config file."""
        return cls.from_dict(read_config_file(path))


# Method config fields that the training config holds at its top level (PEFT's vocabulary).
SHARED_FIELDS = ("rank", "alpha", "dropout", "targets", "rank_pattern", "alpha_pattern",
                 "layers_to_transform", "modules_to_save")
FIELD_TYPES = typing.get_type_hints(TrainConfig)
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
ALIASES = {
    "model_name_or_path": "model", "base_model": "model", "r": "rank", "lora_r": "rank",
    "lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "targets", "lr": "learning_rate",
    "batch_size": "per_device_train_batch_size", "train_batch_size": "per_device_train_batch_size",
    "dataset": "data", "data_path": "data", "train_file": "data", "eval_file": "eval_data",
    "save_steps": "save_every", "eval_steps": "eval_every", "resume_from_checkpoint": "resume",
    "max_seq_length": "max_length", "cutoff_len": "max_length",
    "gradient_accumulation": "gradient_accumulation_steps", "quantization_bit": "quantize_bits",
}


def canonical_key(key: str) -> str | None:
    """The TrainConfig field a user's key means (dashes and aliases resolved), or None."""
    name = key.strip().replace("-", "_")
    return name if name in FIELDS else ALIASES.get(name)


def _unknown_key_message(key: str, method: str) -> str:
    from ..adapters import ADAPTERS

    name = key.replace("-", "_")
    known = isinstance(method, str) and method in ADAPTERS
    if known and name in ADAPTERS.get(method).config_class.field_names():
        return f"{key!r} is a {method} field: put it under method_config (method_config.{name}=<value>)"
    close = difflib.get_close_matches(name, FIELDS + list(ALIASES), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `rankwise finetune --help` for the keys"
    return f"unknown config key {key!r}{hint}"


def checked_type(name: str, value: Any, hint: Any) -> Any:
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for kind in allowed:
        base = typing.get_origin(kind) or kind
        if kind is type(None) and value is None:
            return value
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        item = (typing.get_args(kind) or (str,))[0]
        if base is list and isinstance(value, (list, tuple)) and all(
                isinstance(v, item) and not isinstance(v, bool) for v in value):
            return list(value)
        if base in (int, str, bool, dict) and isinstance(value, base):
            if not (base is int and isinstance(value, bool)):  # a bool is an int to isinstance, not a size
                return value
    names = " or ".join("null" if k is type(None) else (typing.get_origin(k) or k).__name__ for k in allowed)
    raise ConfigError(f"{name} must be {names}, got {value!r} ({type(value).__name__}).")


def usable_path(path: str, check) -> bool:
    """check(Path(path)) for a user's path; False when the OS refuses the name itself (too long, an
    unknown ~user), which pathlib raises rather than answers."""
    try:
        return bool(check(Path(path).expanduser()))
    except (OSError, RuntimeError, ValueError):
        return False


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # ours → accelerate's mixed_precision
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


def check_loop_settings(c) -> None:
    """The training loop's own settings, shared by TrainConfig and PretrainConfig (same names)."""
    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length"):
        require(getattr(c, name) >= 1, f"{name} must be at least 1, got {getattr(c, name)}.")
    for name in ("eval_every", "save_every", "warmup_steps"):
        require(getattr(c, name) >= 0, f"{name} must be 0 or more, got {getattr(c, name)}.")
    for name in ("learning_rate", "weight_decay", "warmup_ratio", "max_grad_norm"):
        require(math.isfinite(getattr(c, name)), f"{name} must be a finite number, got {getattr(c, name)}.")
    require(0 <= c.seed < 2**32, f"seed must be in [0, 2^32), got {c.seed}.")
    require(c.learning_rate > 0, f"learning_rate must be positive, got {c.learning_rate}.")
    require(c.weight_decay >= 0 and c.max_grad_norm >= 0, "weight_decay and max_grad_norm must be 0 or more.")
    require(0 <= c.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {c.warmup_ratio}.")
    require(not (c.warmup_steps and c.warmup_ratio), "set warmup_steps or warmup_ratio, not both.")
    require(c.save_total_limit is None or c.save_total_limit >= 1,
            "save_total_limit must be 1 or more, or null.")
    require(c.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}, got {c.precision!r}.")
    require(c.precision != "fp16" or _has_gpu(),
            "precision=fp16 needs a GPU (CPU autocast runs in bf16); use precision=bf16 on CPU.")
    for tracker in trackers(c):
        require(tracker in TRACKERS,
                f"report_to {tracker!r} is not a tracker; use one of {', '.join(TRACKERS)}.")
        package = TRACKERS[tracker]
        require(importlib.util.find_spec(package) is not None,
                f"report_to={tracker} needs the {package} package; pip install {package}, or drop it "
                "(log.jsonl is always written).")


def _has_gpu() -> bool:
    import torch  # here, not at the top: checking a config stays torch-free otherwise

    return torch.cuda.is_available()


def trackers(c) -> list[str]:
    """The config's report_to as a list (a single name or a list of names)."""
    return _as_list(c.report_to)


def _check_values(c: TrainConfig) -> None:
    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    check_loop_settings(c)
    for name in ("max_new_tokens", "eval_batch_size", "init_batches"):
        require(getattr(c, name) >= 1, f"{name} must be at least 1, got {getattr(c, name)}.")
    require(math.isfinite(c.eval_split) and 0 <= c.eval_split < 1, f"eval_split must be in [0, 1), got "
                                                                    f"{c.eval_split}.")
    require(c.eval_size is None or c.eval_size >= 0, "eval_size must be 0 or more (0 skips evaluation).")
    require((c.task is None) != (c.data is None),
            "give exactly one of task=<bundled task> or data=<file.jsonl>"
            + (", not both." if c.task else "."))
    for path in _as_list(c.data) + _as_list(c.eval_data):
        require(usable_path(path, Path.is_file), f"no file at {path!r}; check the path.")
    require(c.eval_data is None or c.data is not None,
            "eval_data goes with data=; a task has its own test split.")
    sequence = isinstance(c.task, list) or isinstance(c.data, list)
    require(not c.fsdp or not (c.save_every or c.eval_every or sequence),
            "fsdp=true does not write checkpoints, evaluate during training or run task sequences yet; "
            "set save_every=0 and eval_every=0 and train one task.")
    if isinstance(c.task, list) or isinstance(c.data, list):
        require(len(c.sequence()) >= 1, "the list of tasks is empty.")
        require(c.eval_data is None,
                "with a list of data files, each file's held-out part is its eval_split.")
        require(c.resume is None, "a sequence of tasks cannot resume; run it again from the start.")
    from ..models import EMBEDDED

    require(c.model in EMBEDDED or usable_path(c.model, Path.exists),
            f"unknown model {c.model!r}: use one of {', '.join(EMBEDDED)} or a local Hugging Face folder.")
    from ..models import require_causal_lm

    require_causal_lm(c.model, "finetune")
    require(usable_path(c.output_dir, lambda p: p.exists() or True),
            f"output_dir {c.output_dir!r} is not a path this system accepts (too long?).")
    out = Path(c.output_dir).expanduser()
    require(not out.exists() or out.is_dir(), f"output_dir {c.output_dir!r} is a file; pick a folder path.")
    existing = next(parent for parent in (out, *out.parents) if parent.exists())
    require(existing.is_dir(), f"output_dir {c.output_dir!r} lies under the file {str(existing)!r}.")
    if c.task is not None:
        from ..data import list_tasks

        for task in _as_list(c.task):
            require(task in list_tasks(), f"unknown task {task!r}; bundled tasks: {', '.join(list_tasks())}.")
    c.adapter_config()  # unknown method, bad rank, fields the method does not use, stray method_config keys
    from .quantize import check_quantize_settings

    check_quantize_settings(c.quantize_bits, c.quantize_group_size, c.quantize_backend)
    from ..optim import OPTIMIZERS, optimizer_options

    OPTIMIZERS.get(c.optimizer)
    stray = sorted(set(c.optimizer_config) - optimizer_options(c.optimizer))
    require(not stray, f"optimizer_config has {stray}, which {c.optimizer} does not take; it takes "
                       f"{sorted(optimizer_options(c.optimizer))}.")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file as a dict: JSON always, YAML when PyYAML is installed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {str(path)!r}; check the path.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}); re-save it as UTF-8.") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path} is YAML but PyYAML is not installed; pip install pyyaml, "
                              "or use JSON.") from None
        try:
            values = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, TypeError, IndexError, AttributeError) as err:
            # PyYAML's constructors raise plain Python errors on bad tagged values ("!!float ").
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}.") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold one mapping of key: value, not a {type(values).__name__}.")
    return values
