"""Merging fine-tunes of one base model (a family of its own): rankwise.merge_adapters(model, inputs,
method, ...). Methods: linear, task-arithmetic, ties, dare-linear, dare-ties, svd, cat, orthomerge, rmm; the
math is in rankwise.linalg (merging, orthogonal, rmm)."""

from . import cat, euclidean, orthomerge, rmm  # noqa: F401  register the methods
from .api import merge_adapters
from .base import MERGERS, MergeConfig
from .updates import TaskUpdate, read_update

__all__ = ["MERGERS", "MergeConfig", "TaskUpdate", "merge_adapters", "read_update"]
