"""Target selection: which modules of a model a method adapts.

`targets` may be
- "all-linear": every nn.Linear (or compressed stand-in for one), and transformers' GPT-2-style Conv1D
  (a linear layer with its weight stored (in, out); PEFT's "all-linear" takes it too), except the output
  head (its vocab-sized projection is rarely worth adapting);
- "all-blocks": the repeated blocks of the network (the longest nn.ModuleList of same-type modules),
  for block-level methods such as bottleneck adapters;
- a single string other than that: a regular expression that must match a module's full name;
- a list of strings: each is a glob on the full name, or a leaf name such as "q_proj" matched as a suffix
  (an empty list selects nothing: an adapter made only of modules_to_save copies);
- a type or tuple of types: every module of those types.
Errors name the patterns that matched nothing and the closest module names.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import sys
from collections.abc import Sequence

from torch import nn

from ..errors import TargetError
from .compressed import CompressedLinear, is_linear

LINEAR_TYPES = (nn.Linear, CompressedLinear)  # compressed layers stand in for the linears they replaced
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

Targets = str | Sequence[str] | type | tuple[type, ...]


def transformers_conv1d() -> type | None:
    """transformers' Conv1D (GPT-2's linear layer: y = x W + b, W stored (in, out)), or None. Until
    transformers.pytorch_utils is imported no model can hold one, so this never imports transformers."""
    return getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)


def is_linear_like(module: nn.Module) -> bool:
    """What "all-linear" selects: an nn.Linear, a compressed stand-in for one, or transformers' Conv1D."""
    return isinstance(module, LINEAR_TYPES) or type(module) is transformers_conv1d()


def layer_kind(module: nn.Module) -> str | None:
    """The kind of single-weight layer `module` is, for the adapters that cover more than nn.Linear
    (rankwise.adapters.layer_kinds): "linear", "transposed-linear" (transformers' Conv1D), "embedding",
    "conv" (nn.Conv1d/2d/3d), or None. Subclasses do not count: they may change the forward."""
    if is_linear(module):
        return "linear"
    kind = type(module)
    if kind is transformers_conv1d():
        return "transposed-linear"
    return "embedding" if kind is nn.Embedding else "conv" if kind in CONV_TYPES else None


def linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if is_linear_like(module)]


def _output_head_names(model: nn.Module) -> set[str]:
    heads = {"lm_head"}
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is not None:
        heads |= {name for name, module in model.named_modules() if module is head}
    return heads


def _block_names(model: nn.Module) -> list[str]:
    stacks = [
        (name, module) for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1
    ]
    if not stacks:
        return []
    name, stack = max(stacks, key=lambda item: len(item[1]))
    return [f"{name}.{index}" if name else str(index) for index in range(len(stack))]


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern) or fnmatch.fnmatchcase(name, pattern)


def find_targets(
    model: nn.Module, targets: Targets = "all-linear", exclude: Sequence[str] = ()
) -> list[str]:
    """Names of the modules selected by `targets`, minus those matching any `exclude` pattern."""
    named = [(name, module) for name, module in model.named_modules() if name]
    if isinstance(targets, type) or (
        isinstance(targets, tuple) and all(isinstance(t, type) for t in targets)
    ):
        chosen = [name for name, module in named if isinstance(module, targets)]
        unmatched: list[str] = [] if chosen else [str(targets)]
    elif targets == "all-blocks":
        chosen = _block_names(model)
        unmatched = [] if chosen else ["all-blocks"]
    elif targets == "all-linear":
        heads = _output_head_names(model)
        chosen = [
            name for name, module in named
            if is_linear_like(module) and name not in heads and name.rpartition(".")[2] not in heads
        ]
        unmatched = [] if chosen else ["all-linear"]
    elif isinstance(targets, str):
        regex = re.compile(targets)
        chosen = [name for name, _ in named if regex.fullmatch(name)]
        unmatched = [] if chosen else [targets]
    else:
        patterns = list(targets)
        if not patterns:  # an explicit empty list selects nothing (an adapter of modules_to_save only)
            return []
        chosen = [name for name, _ in named if any(_matches(name, p) for p in patterns)]
        unmatched = [p for p in patterns if not any(_matches(name, p) for name, _ in named)]
    if unmatched:
        leaves = sorted({name.rpartition(".")[2] for name in linear_names(model)})
        close = sorted(
            {c for p in unmatched for c in difflib.get_close_matches(p.rpartition(".")[2], leaves, n=3)}
        )
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise TargetError(
            f"target pattern(s) {', '.join(map(repr, unmatched))} matched no module.{hint} "
            f"Linear layer names in this model: {', '.join(leaves) or 'none'}."
        )
    chosen = [name for name in chosen if not any(_matches(name, p) for p in exclude)]
    if not chosen:
        raise TargetError(f"every target was removed by exclude={list(exclude)!r}; nothing left to adapt.")
    return chosen
