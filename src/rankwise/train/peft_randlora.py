"""rankwise's RandLoRA and PEFT's (RandLoraModel, checked against PEFT 0.21.2) holding the same numbers.

Both compute, per layer with d = min(out, in), D = max(out, in), n = ⌈d / rank⌉,
    ΔW = s · B S    (transposed when out < in),    S[k·n + i, :] = λ[k, i] · A[k, :] ⊙ γ[i, :]
with the same trainables λ (rank, n) and γ (n, d), which copy over as they are. They differ in:
  scaling   PEFT s = alpha / rank, rankwise's with peft_scaling=True; rankwise's default (the authors'
            fork) s = alpha / rank / √n is set into PEFT's per-layer `scaling`, which then computes the fork.
  γ at init PEFT (and the authors' fork) reset γ to 1 / max(n, d) = 1/d; rankwise starts at 1/D. λ = 0
            in both, so the update is 0 either way; the twin copies rankwise's γ.
  bases     PEFT keeps one pair for the whole model, sized for its largest layer: A (rank, 1, d_max),
            B (D_max, n_max, rank); a layer uses A[:, 0, :d] and B[:D, :n, :] flattened to (D, n·rank),
            column j of which multiplies row j of S. (So PEFT's B[:, i, k] meets λ[k', i'] with
            k'·n + i' = i·rank + k, not λ[k, i]: a relabelling of i.i.d. columns, the same law.)
            rankwise keeps one pair per layer shape, A (rank, d) and B (D, rank·n), from its seed.
So PEFT's bases give rankwise's as A = A_peft[:, 0, :d], B = B_peft[:D, :n, :].reshape(D, n·rank). The
other way does not exist (rankwise's per-shape bases are not slices of one shared pair), which is why
`save_adapter(..., format="peft")` has no randlora.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import ConfigError


def peft_randlora_twin(base: nn.Module, ours: nn.Module, name: str = "default") -> nn.Module:
    """PEFT's RandLoRA on a copy of `base` (the model `ours` was adapted from) on the same layers, after
    share_randlora_weights: both then compute the same function."""
    from peft import RandLoraConfig, get_peft_model

    from ..adapters.api import get_config, method_layers

    config = get_config(ours, name)
    theirs = get_peft_model(copy.deepcopy(base), RandLoraConfig(
        r=config.rank, randlora_alpha=config.alpha, randlora_dropout=config.dropout,
        target_modules=list(method_layers(ours, name))))
    share_randlora_weights(ours, theirs, name)
    return theirs


@torch.no_grad()
def share_randlora_weights(ours: nn.Module, theirs: nn.Module, name: str = "default") -> None:
    """Give rankwise's adapter `name` in `ours` PEFT's bases from `theirs` (a PeftModel with RandLoRA
    adapter "default" on a copy of the same base), and PEFT's layers rankwise's λ, γ and scaling."""
    from ..adapters.api import method_layers

    inner = theirs.base_model.model
    bases: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # one copy per shape
    for path, adapter in method_layers(ours, name).items():
        layer = inner.get_submodule(path)
        lam = getattr(layer, "randlora_lambda", {}).get("default")
        if lam is None or lam.shape != adapter.lam.shape:
            raise ConfigError(f"PEFT's model has no RandLoRA layer of rank {adapter.config.rank} at {path}; "
                              "build it with the same rank and target modules as rankwise's adapter")
        if adapter.config.peft_scaling and not math.isclose(layer.scaling["default"], adapter.scale):
            raise ConfigError(f"PEFT's RandLoRA scaling at {path} is {layer.scaling['default']}, rankwise's "
                              f"{adapter.scale}; give PEFT randlora_alpha = {adapter.config.alpha}")
        small, large, n = adapter.gamma.shape[1], adapter.basis_B.shape[0], adapter.n_bases
        if (small, large, n) not in bases:
            A = layer.randlora_A["default"][:, 0, :small]
            B = layer.randlora_B["default"][:large, :n, :].reshape(large, -1)
            bases[small, large, n] = (A.to(adapter.lam).contiguous(), B.to(adapter.lam).contiguous())
        # new buffers, not in-place writes: rankwise's own bases are shared through a process-wide cache
        adapter.basis_A, adapter.basis_B = bases[small, large, n]
        lam.copy_(adapter.lam)
        layer.randlora_gamma["default"].copy_(adapter.gamma)
        layer.scaling["default"] = adapter.scale
