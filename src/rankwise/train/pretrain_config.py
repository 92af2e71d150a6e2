"""PretrainConfig: every setting of a `rankwise pretrain` run, checked before anything is built.

The loop's own settings keep TrainConfig's names (learning_rate, max_steps, save_every, ...), so the
same training loop, checkpoints and resume checks serve both commands.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import check_loop_settings, checked_type, usable_path

PRETRAIN_DEFAULT_LR = 1e-3  # GaLore's and SLTrain's AdamW baseline rate for their smallest Llamas


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class PretrainConfig:
    """One pre-training run from scratch. Build with PretrainConfig(...) or PretrainConfig.from_dict."""

    size: str = _opt("tiny", "model size: tiny (0.87 M parameters) or small (25.6 M)")
    method: str = _opt("adamw", "an optimizer (adamw, galore, dct, random, gradnorm-lorp) or a "
                       "parameterization (lowrank, sltrain, lost, sst, relora); see `rankwise methods`")
    rank: int | None = _opt(None, "rank of the projection or factors (null: hidden size / 4)")
    method_config: dict = field(default_factory=dict, metadata={
        "help": "the method's own options, e.g. {\"density\": 0.03} (sltrain), {\"update_interval\": 50}"})
    optimizer: str = _opt("adamw", "the optimizer that trains a parameterization's factors")
    optimizer_config: dict = field(default_factory=dict, metadata={"help": "that optimizer's options"})
    arch: str | None = _opt(None, "a residual-stream variant (rankwise.arch: attnres-full, attnres-block, "
                            "ladder, residual-scale); null: the standard residual")
    arch_config: dict = field(default_factory=dict, metadata={
        "help": "the variant's options, e.g. {\"blocks\": 2} (attnres-block), {\"scale\": \"1/n\"}"})
    refactor_every: int | None = _opt(None, "lowrank/sltrain/lost: refactorize B A every N steps")
    reset_every: int | None = _opt(None, "lowrank/sltrain/lost: reset B's and A's moments every N steps")
    corpus: str | None = _opt(None, "a .txt or .jsonl (\"text\" field) file (null: the bundled corpus)")
    eval_split: float = _opt(0.1, "share of a corpus file's blocks held out for validation")
    max_length: int = _opt(256, "tokens (bytes) per training sequence")
    eval_blocks: int = _opt(64, "validation perplexity over at most this many held-out sequences")
    max_steps: int = _opt(200, "optimizer steps to train")
    per_device_train_batch_size: int = _opt(16, "sequences per process per micro-batch")
    gradient_accumulation_steps: int = _opt(1, "micro-batches per optimizer step")
    learning_rate: float = _opt(PRETRAIN_DEFAULT_LR, "peak learning rate")
    weight_decay: float = _opt(0.0, "decoupled weight decay")
    warmup_steps: int = _opt(0, "linear warmup steps (or set warmup_ratio)")
    warmup_ratio: float = _opt(0.1, "warmup as a fraction of max_steps (GaLore's 10 %)")
    max_grad_norm: float = _opt(1.0, "clip the gradient norm to this (0: no clipping)")
    seed: int = _opt(42, "seed of the weights, the factors and the data order")
    output_dir: str = _opt("runs/pretrain", "where the model, log, plots, results and checkpoints go")
    eval_every: int = _opt(0, "validation perplexity every N steps (0: only at the end)")
    save_every: int = _opt(0, "checkpoint every N steps (0: no checkpoints)")
    save_total_limit: int | None = _opt(2, "keep at most this many checkpoints (null: all)")
    resume: str | None = _opt(None, "\"latest\" or a checkpoint folder to continue from")
    progress: bool = _opt(True, "show progress bars")
    precision: str = _opt("fp32", "fp32, bf16 (autocast, CPU or GPU) or fp16 (autocast, GPU only); the "
                          "trained tensors stay fp32")
    gradient_checkpointing: bool = _opt(False, "recompute each block's activations in the backward pass "
                                               "(less memory, about a third more time)")
    report_to: str | list[str] | None = _opt(None, "trackers through accelerate: tensorboard, wandb, mlflow, "
                                                   "trackio (each must be installed); the JSONL log stays")

    def __post_init__(self) -> None:
        for name in ("method_config", "optimizer_config", "arch_config"):
            if getattr(self, name) is None:
                setattr(self, name, {})
        for f in dataclasses.fields(self):
            setattr(self, f.name, checked_type(f.name, getattr(self, f.name), _TYPES[f.name]))
        _check_values(self)
        if not self.is_reparam:  # the method is the optimizer: the loop reads optimizer and its options
            from ..models.scratch import SIZES
            from ..optim import optimizer_options

            options = {**self.optimizer_config, **self.method_config}
            if "rank" in optimizer_options(self.method):
                options.setdefault("rank", self.rank_for(SIZES[self.size]["hidden_size"]))
            self.optimizer, self.optimizer_config, self.method_config = self.method, options, {}

    @property
    def is_reparam(self) -> bool:
        from ..reparam import REPARAMS

        return self.method in REPARAMS

    def rank_for(self, hidden_size: int) -> int:
        return self.rank if self.rank is not None else max(1, hidden_size // 4)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in values if k.replace("-", "_") not in names)
        if unknown:
            raise ConfigError(f"unknown pretrain settings {unknown}; the settings are {sorted(names)}.")
        return cls(**{k.replace("-", "_"): v for k, v in values.items()})


_TYPES = typing.get_type_hints(PretrainConfig)


def _check_values(c: PretrainConfig) -> None:
    from ..models.scratch import SIZES
    from ..optim import OPTIMIZERS, optimizer_options
    from ..reparam import REPARAMS

    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    require(c.size in SIZES, f"unknown size {c.size!r}; use one of {', '.join(SIZES)}.")
    methods = sorted(OPTIMIZERS.names()) + sorted(REPARAMS.names())
    require(c.method in methods, f"unknown pretrain method {c.method!r}; use one of {', '.join(methods)}.")
    check_loop_settings(c)
    require(c.eval_blocks >= 1, f"eval_blocks must be at least 1, got {c.eval_blocks}.")
    require(c.max_length >= 2, "max_length must be at least 2 (a token and the next one to predict).")
    require(math.isfinite(c.eval_split) and 0 < c.eval_split < 1,
            f"eval_split must be in (0, 1), got {c.eval_split}.")
    hidden = SIZES[c.size]["hidden_size"]
    require(c.rank is None or 1 <= c.rank <= hidden,
            f"rank {c.rank} is outside 1..{hidden}, the {c.size} model's hidden size (the smallest side of "
            "its layers); lower it.")
    for name in ("refactor_every", "reset_every"):
        value = getattr(c, name)
        require(value is None or value >= 1, f"{name} must be a positive number of steps or null.")
    if c.refactor_every or c.reset_every:
        require(c.method in ("lowrank", "sltrain", "lost"),
                f"refactor_every and reset_every apply to lowrank, sltrain and lost (B A factors), not "
                f"{c.method}; sst and relora reset on their own schedules.")
    if c.is_reparam:
        require(c.optimizer in OPTIMIZERS, f"unknown optimizer {c.optimizer!r}; use one of "
                                           f"{', '.join(sorted(OPTIMIZERS.names()))}.")
        config_class = REPARAMS.get(c.method).config_class
        known = {f.name for f in dataclasses.fields(config_class)} - {"rank", "seed"}
        stray = sorted(set(c.method_config) - known)
        require(not stray, f"{c.method} does not take {stray} (rank and seed are top-level settings); it "
                           f"takes {sorted(known)}.")
        config_class(**{"rank": c.rank_for(hidden), **c.method_config})  # the method's own value checks
    else:
        require(c.optimizer in ("adamw", c.method), f"method {c.method} is itself the optimizer; leave "
                                                     "optimizer unset and put its options in method_config.")
        options = optimizer_options(c.method)
        both = sorted(set(c.method_config) & set(c.optimizer_config))
        stray = sorted((set(c.method_config) | set(c.optimizer_config)) - options)
        require(not both, f"{both} set in both method_config and optimizer_config; keep one.")
        require(not stray, f"{c.method} does not take {stray}; it takes {sorted(options) or 'no options'}.")
        require(c.rank is None or "rank" in options,
                f"{c.method} trains at full rank; rank does not apply (drop it, or pick galore, dct, ...).")
    if c.arch is not None:
        from ..arch import ARCHS

        ARCHS.get(c.arch).config_class.create(c.arch, **c.arch_config).check_depth(
            SIZES[c.size]["num_hidden_layers"])  # a block count or `upper` that cannot fit fails here
    else:
        require(not c.arch_config, f"arch_config {c.arch_config} is set but arch is not; name the variant.")
    if c.corpus is not None:
        require(usable_path(c.corpus, Path.is_file), f"corpus {c.corpus!r}: no such file; give a .txt or "
                                                     ".jsonl file of text, or leave corpus unset.")
    require(usable_path(c.output_dir, lambda p: not p.exists() or p.is_dir()),
            f"output_dir {c.output_dir!r} is a file or a path this system refuses; pick a folder path.")
