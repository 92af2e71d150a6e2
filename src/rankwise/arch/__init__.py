"""Residual-stream variants: Attention Residuals (full and block), Ladder Residual and depth-scaled
residual branches, installed on a Llama-style model's blocks.

    rankwise.arch.apply(model, "attnres-block", blocks=2)
    rankwise.arch.apply(model, "ladder", upper=15)         # convert the upper 15 blocks
    rankwise.arch.apply(model, "residual-scale", scale="1/n", normalize=False)

A re-architected model saves and loads like any other (rankwise.io.save_model, rankwise.models.load).
"""

from . import attnres, ladder, residual_scale  # noqa: F401  (registers the variants)
from .api import apply, installed
from .base import ARCHS, ArchConfig, StreamBlock

__all__ = ["ARCHS", "ArchConfig", "StreamBlock", "apply", "installed"]
