"""Hidden-state norm by depth: how the residual stream grows through the layers.

Motivation: "Attention Residuals" (Kimi team, 2026) notes that in PreNorm transformers
h_L = h_1 + Σ_l f_l, so the hidden-state norm grows with depth and dilutes each layer's contribution;
"On residual network depth" (Dherin & Munn, 2025) bounds that growth by (1 + λc)^n for residual
branches scaled by λ. This diagnostic measures it on a real text:

    norm_l   = (1/T) Σ_t ‖h_l[t]‖_2          (l = 0 is the embedding output, l = L the last layer's)
    rms_l    = norm_l / √d
    growth_l = norm_l / norm_{l−1}          (l ≥ 1; 1.0 means the layer left the norm unchanged)

Hugging Face's output_hidden_states gives L + 1 states; for Llama-style models the last one has the
final RMSNorm applied: "final_norm_applied" says so, and then the last growth reflects that norm (and
its gain), not a residual update.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from ..errors import DataError

__all__ = ["DEFAULT_TEXT", "residual_norms"]

DEFAULT_TEXT = (
    "The residual stream carries information from one layer to the next. Each attention and MLP block "
    "reads from it and adds its output back, so what early layers write can be read by every later layer."
)


@torch.no_grad()
def residual_norms(model: nn.Module, tokenizer, text: str = DEFAULT_TEXT, *, max_length: int = 512) -> dict:
    """Mean token norm of each hidden state (embedding + every layer's output) and the growth per layer.

    Returns plain data: {"norm": [L+1 floats], "rms": [...], "growth": [L floats], "tokens": T,
    "hidden_size": d, "final_norm_applied": bool}. The model's train/eval mode is left as it was
    (it is run in eval mode so dropout does not perturb the norms).
    """
    if not text or not text.strip():
        raise DataError("residual_norms needs a non-empty text to run through the model.")
    ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        states = model(input_ids=ids.to(device), output_hidden_states=True).hidden_states
    finally:
        model.train(was_training)
    norm = [float(h[0].float().norm(dim=-1).mean()) for h in states]
    d = states[0].shape[-1]
    growth = [b / a if a > 0 else math.inf for a, b in pairwise(norm)]
    # transformers' Llama/Mistral/Qwen apply the final norm to the last hidden state they return
    final_norm = getattr(getattr(model, "model", model), "norm", None) is not None
    return {"norm": norm, "rms": [n / math.sqrt(d) for n in norm], "growth": growth,
            "tokens": int(ids.shape[1]), "hidden_size": int(d), "final_norm_applied": final_norm}
