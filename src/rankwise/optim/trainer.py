"""Any registered optimizer (projected ones included) for transformers.Trainer or another loop.

    optimizer = rankwise.optim.trainer_optimizer(model, "galore", lr=1e-3, rank=128)
    trainer = Trainer(model=model, args=args, ..., optimizers=(optimizer, None),
                      callbacks=[rankwise.train.hf.RankwiseCallback()])

Which parameters train, in which groups:
- a model with active adapters: the adapter methods' own groups (rankwise.adapters.hooks.param_groups,
  as rankwise's loop and rankwise.train.hf.build_optimizer use), which carry per-group learning rates;
  the projected optimizers project the 2-D tensors of each group (ProjectedAdamW's opt-in rule).
- any other model (full training, pre-training, a reparametrized model): every parameter with
  requires_grad, in two groups, as GaLore's training script builds them: the 2-D weights outside the
  token embeddings and the output head first (GaLore projects the weights of its "attn" and "mlp"
  modules, i.e. of the blocks), then the rest (embeddings, head, norms, biases, 1-D sparse values),
  which stays plain. The projected optimizers receive `rank` etc. for the first group only; for
  adamw and sgd the split changes nothing. Weight decay applies to both groups, as in GaLore's script.

The Trainer's own betas/eps (args.adam_beta1, ...) are not read here; pass betas=..., eps=... as
options, or use rankwise.train.hf.build_optimizer(model, args, name, ...), which reads them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..adapters import active_adapters, hooks
from ..errors import ConfigError
from .projected import ProjectedAdamW
from .registry import build_optimizer

PROJECTION_KEYS = ("rank", "update_interval", "scale", "projector")  # ProjectedAdamW's per-group opt-in


def _embedding_params(model: nn.Module) -> set[int]:
    """ids of the token embeddings' and output head's parameters (tied or not)."""
    modules = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            modules.append(module)
    return {id(p) for module in modules for p in module.parameters()}


def _split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(the 2-D weights outside the embeddings and head, every other trainable parameter)."""
    embeddings = _embedding_params(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in trainable if p.ndim == 2 and id(p) not in embeddings]
    chosen = {id(p) for p in matrices}
    return matrices, [p for p in trainable if id(p) not in chosen]


def trainable_groups(model: nn.Module, lr: float) -> list[dict]:
    """The parameter groups trainer_optimizer uses (see the module docstring), empty groups dropped."""
    if active_adapters(model):
        return hooks.param_groups(model, lr)
    return [{"params": params, "lr": lr} for params in _split(model) if params]


def trainer_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0,
                      **options: Any) -> torch.optim.Optimizer:
    """Optimizer `name` from rankwise.optim.OPTIMIZERS over the model's trainable parameters, grouped
    as the module docstring says; pass it as Trainer(optimizers=(optimizer, None)). Options are the
    optimizer's own (e.g. rank, update_interval, scale for galore/dct/random)."""
    groups = trainable_groups(model, lr)
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no parameter with requires_grad; adapt it, "
                          "reparametrize it or unfreeze the weights to train before building an optimizer.")
    optimizer = build_optimizer(name, groups, lr=lr, weight_decay=weight_decay, **options)
    if isinstance(optimizer, ProjectedAdamW) and not active_adapters(model):
        # The registry's factories opt in every group that holds a 2-D tensor; the embeddings, head and
        # norms must stay plain AdamW, and ProjectedAdamW projects only the groups that set `rank`.
        plain = {id(p) for p in _split(model)[1]}
        for group in optimizer.param_groups:
            if all(id(p) in plain for p in group["params"]):
                for key in PROJECTION_KEYS:
                    group.pop(key, None)
    return optimizer
