"""Mixed-adapter batches: each row of a batch runs through its own adapter, in one forward pass.

    with mixed_batch(model, ["a", "b", "__base__", "a"]):   # one name per row; None also means the base
        logits = model(ids).logits                            # or model.generate(...), loss.backward()
    model(ids, adapter_names=["a", "b", None, "a"])           # the same for one forward (adapt installs it)
transformers' generate() refuses keywords its model does not declare: call it inside the block.

Rule, per adapted layer, with R_n the rows named n:
    y = base(x)                                   once, for the whole batch
    y[R_n] = adapter_n(x[R_n], y[R_n], base)      for each adapter n named in the batch and held here
so rows of n get what n alone active gives them (up to the rounding of a larger matmul), "__base__" rows
the base model, and gradients follow the rows: each row's loss reaches only its own adapter. To train
several together, set_active(model, names) makes them all trainable (inside the block, the routing
decides what runs, so they never stack). With a loss averaged over the batch, adapter n gets the
gradient of its rows' loss summed over all rows: training n alone on R_n, scaled by |R_n| / rows.
Gradient checkpointing reruns forwards in backward, so then call backward inside the block.

Every method mixes whose forward treats each row on its own, which all of rankwise's do: the LoRA family,
the weight-reading ones (DoRA's per-feature gain depends on weights only; TLoRA, SVFit, LoLDU), the block
methods (AdapterTune is per token, LoRRA's learners attend within a row) and modules_to_save copies.
Per-token randomness (dropout, Bayesian-LoRA's training-time gates) draws other numbers than separate
passes would, from the same distribution. Refused: merged adapters (the base weight holds them; unmerge
first), and VGLoRA while a saliency mask is set (that mask is shaped for the whole batch). Rows are the
first dimension of each adapted layer's input (batch-first models, as in transformers). PEFT routes rows
for LoRA at inference only, and not with DoRA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ._blocks import hidden_of, with_hidden
from .layer import AdaptedModule

BASE = "__base__"  # a row that runs through the base model alone (None means the same)


class Routing:
    """The rows of one batch grouped by adapter name, in first-seen order; applied by AdaptedModule."""

    def __init__(self, names: Sequence[str | None]):
        self.rows = len(names)
        self.groups: dict[str, list[int]] = {}
        for row, name in enumerate(names):
            self.groups.setdefault(BASE if name is None else name, []).append(row)
        order = [row for rows in self.groups.values() for row in rows]
        # Rows already grouped (a, a, b, b): slices are views, and no permutation is needed at the end.
        self.contiguous = order == list(range(self.rows))
        self._order = torch.tensor(order)
        self._on: dict[torch.device, tuple[list[torch.Tensor], torch.Tensor]] = {}

    def _indices(self, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(row indices per group, the permutation putting the concatenated groups back in row order)."""
        if device not in self._on:  # once per device, not once per layer
            groups = [torch.tensor(rows, device=device) for rows in self.groups.values()]
            self._on[device] = groups, torch.argsort(self._order).to(device)
        return self._on[device]

    def apply(self, layer: AdaptedModule, x: torch.Tensor, out):
        hidden = hidden_of(out)
        if x.shape[0] != self.rows or hidden.shape[0] != self.rows:
            raise ConfigError(
                f"this mixed batch names {self.rows} rows, but a {type(layer.base).__name__} got "
                f"{x.shape[0]}; give one adapter name per row (generate with num_beams or "
                "num_return_sequences > 1 multiplies the rows: repeat each name accordingly).")
        groups, inverse = self._indices(x.device)
        pieces, start = [], 0
        for name, index in zip(self.groups, groups):
            if self.contiguous:
                x_rows, out_rows = x.narrow(0, start, len(index)), hidden.narrow(0, start, len(index))
                start += len(index)
            else:
                x_rows, out_rows = x.index_select(0, index), hidden.index_select(0, index)
            if name in layer.adapters:
                out_rows = hidden_of(layer.adapters[name](x_rows, with_hidden(out, out_rows), layer.base))
            pieces.append(out_rows)
        result = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return with_hidden(out, result if self.contiguous else result.index_select(0, inverse))


def _layers(model: nn.Module) -> list[AdaptedModule]:
    return [m for m in model.modules() if isinstance(m, AdaptedModule)]


def routing_for(model: nn.Module, names: Sequence[str | None], rows: int | None = None) -> Routing:
    """A checked Routing for `names`; `rows`, when known, is the batch size they must match."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(
            n is None or isinstance(n, str) for n in names):
        raise ConfigError(f"adapter_names takes a list of one adapter name (or None) per row, got {names!r}.")
    if rows is not None and len(names) != rows:
        raise ConfigError(f"adapter_names has {len(names)} names, the batch {rows} rows; give one per row.")
    layers = _layers(model)
    known = list(dict.fromkeys(n for layer in layers for n in layer.adapters))
    unknown = sorted({n for n in names if n not in (None, BASE) and n not in known})
    if unknown:
        raise ConfigError(f"unknown adapter(s) {unknown} in adapter_names; this model has {known or 'none'} "
                          f"(use {BASE!r} or None for the base model).")
    merged = sorted({n for layer in layers for n in layer.merged})
    if merged:
        raise ConfigError(f"adapter(s) {merged} are merged into the base weights, so no row could run "
                          "without them; unmerge first (rankwise.unmerge(model)).")
    for layer in layers:
        for name in set(names) & set(layer.adapters):
            if getattr(layer.adapters[name], "saliency_mask", None) is not None:
                raise ConfigError(f"adapter {name!r} has a saliency mask set, shaped for a whole batch; "
                                  "leave the `saliency` block before mixing adapters.")
    return Routing(names)


def _set(model: nn.Module, routing: Routing | None) -> list[tuple[AdaptedModule, Routing | None]]:
    """Route every adapted layer with `routing`; returns what each had before."""
    layers = _layers(model)
    before = [(layer, layer.routing) for layer in layers]
    for layer in layers:
        layer.routing = routing
    return before


def _restore(before: list[tuple[AdaptedModule, Routing | None]]) -> None:
    for layer, routing in before:
        layer.routing = routing


@contextlib.contextmanager
def mixed_batch(model: nn.Module, adapter_names: Sequence[str | None]) -> Iterator[nn.Module]:
    """Route row i of every forward inside the block through adapter adapter_names[i] (see the module)."""
    before = _set(model, routing_for(model, adapter_names))
    try:
        yield model
    finally:
        _restore(before)


def _recomputes(model: nn.Module) -> bool:
    """Whether backward reruns forwards: transformers' gradient checkpointing (the new name first)."""
    attr = next((a for a in ("is_activation_checkpointing", "is_gradient_checkpointing")
                 if hasattr(type(model), a)), None)
    return bool(getattr(model, attr)) if attr else False


class _AdapterNamesHooks:
    """model(..., adapter_names=[...]): a pre-hook routes the call, a post-hook (run even when the forward
    raises) puts back the routing that was there before, so nested calls and errors leave nothing set."""

    def __init__(self):
        self.saved: list[list] = []

    def before(self, model: nn.Module, args: tuple, kwargs: dict):
        self.saved.append([])  # first: the post-hook pops one entry even if this hook raises
        names = kwargs.pop("adapter_names", None)
        if names is not None:
            if model.training and torch.is_grad_enabled() and _recomputes(model):
                raise ConfigError("gradient checkpointing reruns the forward in backward, after this call "
                                  "ends; run forward and backward inside `with mixed_batch(model, names):`.")
            first = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
            rows = first.shape[0] if torch.is_tensor(first) and first.dim() > 1 else None
            self.saved[-1] = _set(model, routing_for(model, names, rows))
        return args, kwargs

    def after(self, model: nn.Module, args: tuple, output):
        if self.saved:
            _restore(self.saved.pop())


def install_adapter_names(model: nn.Module) -> None:
    """Let model(..., adapter_names=[...]) route one call; adapt() calls this once per model."""
    if getattr(model, "_rankwise_adapter_names", False):
        return
    hooks = _AdapterNamesHooks()
    model.register_forward_pre_hook(hooks.before, with_kwargs=True)
    model.register_forward_hook(hooks.after, always_call=True)
    model._rankwise_adapter_names = True
