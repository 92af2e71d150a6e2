"""Merging adapters into a compressed base: dequantize, merge, requantize, and record what it cost.

A compressed layer (rankwise.surgery.CompressedLinear) stores Ŵ compactly. Merging the adapters named in
one merge forms, in their order, the dense merged weight
    W' = merged_weight_k(… merged_weight_1(Ŵ)),   ΔW = W' − Ŵ
and asks the layer to store it (CompressedLinear.store): a quantized layer re-fits its codes, so its
weight becomes Q(W'); a kind whose compact form cannot hold any weight (pruned, binary, factorized)
refuses with NotMergeable before anything changes. What the requantization added is recorded on the
compressed layer itself, so it outlives the adapter wrapper (unload(merge=True)):
    error = ‖Q(W') − W'‖_F,   relative_to_delta = error / ‖ΔW‖_F,   relative_to_weight = error / ‖W'‖_F
(relative_to_delta is None when ΔW = 0). A relative_to_delta near or above 1 means the quantization
grid is too coarse for the update: the merged model has lost most of what the adapter learned.
Unmerge puts back what the layer stored before the first merge (CompressedLinear.stored_state/restore),
bit for bit, and clears the record; the pre-merge dense Ŵ is kept meanwhile, as for a dense base, for
original_weight(). Merging several adapters at once requantizes once, after all are folded in.
"""

from __future__ import annotations

import torch
from torch import nn

from ..surgery import CompressedLinear, wrappers


def requantization_error(stored: torch.Tensor, target: torch.Tensor, delta: torch.Tensor) -> dict:
    """{"error", "relative_to_delta", "relative_to_weight"} for a layer asked to hold `target` (W') that
    holds `stored` (Q(W')), where `delta` is the update merged in (ΔW)."""
    error = torch.linalg.matrix_norm((stored - target).double()).item()
    delta_norm = torch.linalg.matrix_norm(delta.double()).item()
    weight_norm = torch.linalg.matrix_norm(target.double()).item()
    return {"error": error,
            "relative_to_delta": error / delta_norm if delta_norm > 0 else None,
            "relative_to_weight": error / weight_norm if weight_norm > 0 else None}


@torch.no_grad()
def merge_compressed(layer, names: list[str]) -> None:
    """AdaptedModule.merge for a CompressedLinear base: fold `names` (those not yet merged) into Q(W')."""
    pending = [name for name in names if name not in layer.merged]
    if not pending:
        return
    base: CompressedLinear = layer.base
    before = base.dense_weight()
    target = before
    for name in pending:  # each reads the weight with the earlier ones folded in, as for a dense base
        target = layer.adapters[name].merged_weight(target)
    first = layer._unmerged_weight is None
    saved = base.stored_state() if first else None
    base.store(target)  # NotMergeable here for kinds that cannot re-store; the layer is still unchanged
    if first:
        layer._unmerged_state, layer._unmerged_weight = saved, before.clone()
    base.requantization_error = requantization_error(base.dense_weight(), target, target - before)
    layer.merged.extend(pending)


@torch.no_grad()
def restore_compressed(layer) -> None:
    """Put back the compressed base's stored tensors as they were before the first merge."""
    if layer._unmerged_state is not None:
        layer.base.restore(layer._unmerged_state)
        layer.base.requantization_error = None
    layer._unmerged_state = None


def requantization_errors(model: nn.Module) -> dict[str, dict]:
    """{module path: requantization_error record} of every compressed layer an adapter was merged into
    (rankwise.merge, or unload(merge=True)); paths are named as without adapters. Empty when none was."""
    unwrapped = {id(wrapper.base): path for path, wrapper in wrappers(model).items()}
    return {unwrapped.get(id(module), path): dict(module.requantization_error)
            for path, module in model.named_modules()
            if isinstance(module, CompressedLinear) and module.requantization_error is not None}
