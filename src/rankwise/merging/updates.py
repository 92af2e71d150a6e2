"""Each input of a merge as the full update it makes to every layer of one base model.

An input is a rankwise adapter folder, a PEFT adapter folder, or a Hugging Face model folder of the same
base. For each layer it changes, the update is ΔW = merged_weight(W) − W: the method's whole update
(DoRA's magnitude, TLoRA's transform, PiSSA's residual base all included), never only B·A. Where the
update is exactly low-rank (a plain LoRA or rsLoRA: ΔW = s·B A) only its factors are kept: a merge
that can stay low-rank (cat, rmm) never forms the dense matrix, and a dense merge (ties, dare, ...) forms
each input's ΔW one layer at a time, so its memory holds the base model plus one layer's updates rather
than every input's full model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..adapters import layers_of, unload
from ..adapters.lora import Lora
from ..errors import AdapterFileError, ConfigError, NotMergeable
from ..io import load_adapter
from ..surgery import is_linear


@dataclass
class TaskUpdate:
    """One input's update of each layer it changes: {path: (B, A)} with B A = ΔW exactly where the update
    is a plain low-rank product, {path: ΔW (out, in), float32} for every other layer."""

    source: str
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        return [*self.factors, *self.dense]

    @property
    def low_rank(self) -> bool:
        return bool(self.factors) and not self.dense

    def delta(self, path: str) -> torch.Tensor | None:
        """ΔW of layer `path` (formed from the factors when it is low-rank), or None if it is unchanged."""
        if path in self.factors:
            B, A = self.factors[path]
            return B @ A
        return self.dense.get(path)


def _adapter_update(model: nn.Module, folder: Path, name: str) -> TaskUpdate:
    load_adapter(model, folder, name)  # checks the base-model fingerprint the folder recorded
    try:
        update = TaskUpdate(str(folder))
        for path, adapter in layers_of(model, name).items():
            if not adapter.mergeable:
                raise NotMergeable(f"{folder}: its method {adapter.name} cannot be folded into the base "
                                   f"weight ({path}), so it has no update to merge; merge mergeable adapters "
                                   "only (see `rankwise methods`).")
            # ΔW = s · B A, nothing else, and B A is the weight's own layout (not a conv's or GPT-2's Conv1D)
            if type(adapter).delta_weight is Lora.delta_weight and adapter.layer_shape.kind == "linear":
                update.factors[path] = (adapter.lora_B.detach().float() * adapter.scale,
                                        adapter.lora_A.detach().float())
            else:
                weight = model.get_submodule(path).base.weight.detach().float()
                update.dense[path] = (adapter.merged_weight(weight) - weight).detach()
    finally:
        unload(model, name)
    return update


def _model_update(model: nn.Module, folder: Path) -> TaskUpdate:
    from ..models import load

    tuned, _ = load(str(folder), tokenizer=False)
    base_layers = {p: m for p, m in model.named_modules() if is_linear(m)}
    tuned_layers = {p: m for p, m in tuned.named_modules() if is_linear(m)}
    if base_layers.keys() != tuned_layers.keys():
        extra = sorted(tuned_layers.keys() ^ base_layers.keys())[:3]
        raise ConfigError(f"{folder}: its linear layers differ from the base model's (e.g. {extra}); "
                          "merge fine-tunes of one base model only.")
    update = TaskUpdate(str(folder))
    for path, layer in base_layers.items():
        if tuned_layers[path].weight.shape != layer.weight.shape:
            raise ConfigError(f"{folder}: {path} has shape {tuple(tuned_layers[path].weight.shape)}, the "
                              f"base {tuple(layer.weight.shape)}; merge fine-tunes of one base model only.")
        delta = (tuned_layers[path].weight.detach().float() - layer.weight.detach().float())
        if delta.any():
            update.dense[path] = delta
    return update


def read_update(model: nn.Module, source: str | Path, index: int = 0) -> TaskUpdate:
    """The update input `source` makes to `model` (left unchanged): an adapter folder (rankwise or PEFT)
    or a model folder (config.json) of the same base."""
    folder = Path(source)
    if not folder.is_dir():
        raise ConfigError(f"input {index + 1} ({source}): no such folder; give adapter folders (rankwise or "
                          "PEFT) or Hugging Face model folders of the base model.")
    is_adapter = (folder / "adapter.json").is_file() or (folder / "adapter_config.json").is_file()
    if is_adapter:
        update = _adapter_update(model, folder, f"merge-input-{index}")
    elif (folder / "config.json").is_file():
        update = _model_update(model, folder)
    else:
        raise AdapterFileError(f"input {index + 1} ({folder}) is neither an adapter folder (adapter.json or "
                               "adapter_config.json) nor a model folder (config.json).")
    if not update.paths:
        raise ConfigError(f"input {index + 1} ({folder}) changes no layer of the base model; nothing to "
                          "merge.")
    return update
