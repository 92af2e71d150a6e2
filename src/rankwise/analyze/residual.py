"""Hidden-state norm by depth: how the residual stream grows through the layers.

Motivation: "Attention Residuals" (Kimi team, 2026) notes that in PreNorm transformers
h_L = h_1 + Σ_l f_l, so the hidden-state norm grows with depth and dilutes each layer's contribution;
"On residual network depth" (Dherin & Munn, 2025) bounds that growth by (1 + λc)^n for residual
branches scaled by λ. This diagnostic measures it on a real text:

    norm_l   = (1/T) Σ_t ‖h_l[t]‖_2          (l = 0 is the first block's input, l = L the last block's output)
    rms_l    = norm_l / √d
    growth_l = norm_l / norm_{l−1}          (l ≥ 1; 1.0 means the layer left the norm unchanged)

The states are read off the repeated blocks themselves (forward hooks on the longest stack of same-type
modules), not from Hugging Face's output_hidden_states: that also works for blocks rewired by
rankwise.arch, and the last state is the stream itself, before any final norm.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from ..errors import DataError
from ..surgery import find_targets

__all__ = ["DEFAULT_TEXT", "residual_norms"]

DEFAULT_TEXT = (
    "The residual stream carries information from one layer to the next. Each attention and MLP block "
    "reads from it and adds its output back, so what early layers write can be read by every later layer."
)


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # older blocks return (hidden, ...)


@torch.no_grad()
def residual_norms(model: nn.Module, tokenizer, text: str = DEFAULT_TEXT, *, max_length: int = 512) -> dict:
    """Mean token norm of each hidden state (the first block's input + every block's output) and the
    growth per block.

    Returns plain data: {"norm": [L+1 floats], "rms": [...], "growth": [L floats], "tokens": T,
    "hidden_size": d}. The model's train/eval mode is left as it was (it is run in eval mode so dropout
    does not perturb the norms).
    """
    if not text or not text.strip():
        raise DataError("residual_norms needs a non-empty text to run through the model.")
    blocks = [model.get_submodule(path) for path in find_targets(model, "all-blocks")]
    ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
    device = next(model.parameters()).device
    states: list[torch.Tensor] = []

    def first_input(module, args, kwargs):
        states.append(args[0] if args else kwargs["hidden_states"])

    handles = [blocks[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    handles += [block.register_forward_hook(lambda m, a, out: states.append(_hidden(out)))
                for block in blocks]
    was_training = model.training
    model.eval()
    try:
        model(input_ids=ids.to(device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    norm = [float(h[0].float().norm(dim=-1).mean()) for h in states]
    d = states[0].shape[-1]
    growth = [b / a if a > 0 else math.inf for a, b in pairwise(norm)]
    return {"norm": norm, "rms": [n / math.sqrt(d) for n in norm], "growth": growth,
            "tokens": int(ids.shape[1]), "hidden_size": int(d)}
