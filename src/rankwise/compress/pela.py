"""PELA: Learning Parameter-Efficient Models with Low-Rank Approximation (Guo, Wang, Kankanhalli;
CVPR 2024, arXiv 2310.10700).

Each targeted linear W (out, in) is replaced by its truncated SVD at
    k = ⌊in · out / (c · (in + out))⌋        (c = compression_ratio; the factors hold ≈ 1/c of W's entries)
    B = U_k √Σ_k (out, k),  A = √Σ_k V_kᵀ (k, in),   y = B (A x) + b
then the low-rank student is distilled against the original model (the frozen teacher) on unlabeled
batches (compress's `calibration`), for `steps` AdamW steps at `lr`:
    L = α · mean_blocks MSE(F_s, F_t) + β · MSE(logits_s, logits_t) + w · mean_layers (‖B A − W‖_max − ε)²
F are the outputs of each block (`feature_modules`, default the model's repeated blocks; a model without
them uses the compressed layers' outputs). The last term is the paper's weight-perturbation regulariser
(‖·‖_max: the largest entry, what torch.norm(·, inf) gives the code). What trains: A, B and the
compressed layers' biases; every other tensor stays as it was.

Defaults are the released DeiT script's: c = 2, α (kd_alpha) = 1, β (kd_beta) = 0, w (inf_norm_weight)
= 0, so the regulariser is off, ε (inf_norm_eps) = 1e-3 (its Swin script uses w = 1, ε = 0). Where we
differ from the code: its intermediate pre-training also has the task loss on labelled ImageNet and
trains every student parameter for 50 epochs (AdamW, lr 5e-4, cosine); compress() gets unlabeled
batches, so the task loss is dropped, only the factors train, and the pass is short (`steps`, `lr`,
constant). Teacher and student run in eval mode (no dropout), so their features differ only by the
factorization. The teacher is the original model itself, its replaced layers swapped back in for the
teacher's forward, so no second copy of the model is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import cycle, islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError, TargetError
from ..optim import build_optimizer
from ..surgery import find_targets, replace_module
from .base import CompressConfig, SvdCompressor, register


def pela_rank(in_features: int, out_features: int, compression_ratio: float) -> int:
    """k = ⌊in · out / (c (in + out))⌋: k (in + out) ≈ in · out / c."""
    return int(in_features * out_features // (compression_ratio * (in_features + out_features)))


@dataclass
class PelaConfig(CompressConfig):
    compression_ratio: float = 2.0  # c: the factors keep about 1/c of each layer's weights
    steps: int = 100  # distillation steps over the calibration batches (cycled); 0: the SVD only
    lr: float = 1e-4
    feature_weight: float = 1.0  # α, the code's kd_alpha
    logits_weight: float = 0.0  # β, kd_beta
    inf_norm_weight: float = 0.0  # w, the weight-perturbation regulariser (off in the released script)
    inf_norm_eps: float = 1e-3  # ε
    feature_modules: Any = "all-blocks"  # whose outputs are distilled (a targets spec)

    invalid = ({"compression_ratio": 0.5}, {"steps": -1}, {"lr": 0.0}, {"feature_weight": -1.0},
               {"feature_weight": 0.0, "logits_weight": 0.0, "inf_norm_weight": 0.0})

    def __post_init__(self) -> None:
        super().__post_init__()
        number = (int, float)
        if not (isinstance(self.compression_ratio, number) and self.compression_ratio >= 1):
            raise ConfigError(f"compression_ratio must be >= 1, got {self.compression_ratio!r}.")
        if type(self.steps) is not int or self.steps < 0:
            raise ConfigError(f"steps must be an integer >= 0, got {self.steps!r}.")
        if not (isinstance(self.lr, number) and self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr!r}.")
        weights = {"feature_weight": self.feature_weight, "logits_weight": self.logits_weight,
                   "inf_norm_weight": self.inf_norm_weight, "inf_norm_eps": self.inf_norm_eps}
        for key, value in weights.items():
            if not (isinstance(value, number) and value >= 0):
                raise ConfigError(f"{key} must be >= 0, got {value!r}.")
        if self.steps and not (self.feature_weight or self.logits_weight or self.inf_norm_weight):
            raise ConfigError("distillation needs a loss: set feature_weight, logits_weight or "
                              "inf_norm_weight > 0, or steps=0 for the SVD alone.")

    def rank_for(self, layer: nn.Linear) -> int:
        rank = pela_rank(layer.in_features, layer.out_features, self.compression_ratio)
        if rank < 1:
            raise ConfigError(f"compression_ratio {self.compression_ratio} leaves rank 0 for this "
                              f"({layer.out_features}, {layer.in_features}) layer; lower it or exclude it.")
        return rank


def _output(value: Any) -> torch.Tensor:
    """The tensor a module returned: the logits of a transformers output, the hidden states of a block."""
    if isinstance(value, torch.Tensor):
        return value
    if getattr(value, "logits", None) is not None:
        return value.logits
    return _output(value[0])


@contextmanager
def _swapped(model: nn.Module, layers: dict[str, nn.Module]) -> Iterator[None]:
    """`layers` in place of the model's modules at their paths, for the duration."""
    previous = {path: replace_module(model, path, layer) for path, layer in layers.items()}
    try:
        yield
    finally:
        for path, layer in previous.items():
            replace_module(model, path, layer)


@contextmanager
def _captured(modules: dict[str, list[nn.Module]]) -> Iterator[dict[str, torch.Tensor]]:
    """{path: the output of whichever of its modules ran last}, filled as the model runs."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(lambda m, args, out, p=path: outputs.__setitem__(p, _output(out)))
             for path, candidates in modules.items() for module in candidates]
    try:
        yield outputs
    finally:
        for hook in hooks:
            hook.remove()


def _run(model: nn.Module, batch: Any) -> torch.Tensor:
    return _output(model(**batch) if isinstance(batch, dict) else model(batch))


def pela_loss(config: PelaConfig, paths: list[str], student: dict, teacher: dict, logits: tuple,
              gaps: list) -> torch.Tensor:
    """α · mean over `paths` of MSE(F_s, F_t) + β · MSE(logits_s, logits_t) + w · mean (gap − ε)²."""
    terms = []
    if config.feature_weight:
        missing = [path for path in paths if path not in student or path not in teacher]
        if missing:
            raise ConfigError(f"feature module {missing[0]} does not run in the model's forward pass; "
                              "give feature_modules that it calls.")
        terms.append(config.feature_weight * torch.stack(
            [F.mse_loss(student[path], teacher[path]) for path in paths]).mean())
    if config.logits_weight:
        terms.append(config.logits_weight * F.mse_loss(*logits))
    if config.inf_norm_weight:
        gap_terms = [(gap - config.inf_norm_eps).square() for gap in gaps]
        terms.append(config.inf_norm_weight * torch.stack(gap_terms).mean())
    return torch.stack(terms).sum()


def distill(model: nn.Module, originals: dict[str, nn.Linear], batches: list,
            config: PelaConfig) -> list[float]:
    """PELA's distillation of the installed low-rank layers against `originals`; the loss of each step."""
    students = {path: model.get_submodule(path) for path in originals}
    try:
        paths = find_targets(model, config.feature_modules)
    except TargetError:
        if config.feature_modules != "all-blocks":
            raise
        paths = list(originals)  # no repeated blocks: each compressed layer is a block
    watched = {path: [model.get_submodule(path), *([originals[path]] if path in originals else [])]
               for path in paths}
    params = [p for module in students.values() for p in module.parameters()]
    trained = {id(p) for p in params}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in trained]
    optimizer = build_optimizer("adamw", [{"params": params}], lr=config.lr)
    training, losses = model.training, []
    model.eval()
    for p in others:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    try:
        with _captured(watched) as features:
            for batch in tqdm(islice(cycle(batches), config.steps), total=config.steps, desc="pela distil",
                              leave=False):
                features.clear()
                with torch.no_grad(), _swapped(model, originals):
                    teacher_logits = _run(model, batch)
                    teacher = dict(features)
                features.clear()
                logits = (_run(model, batch), teacher_logits)
                gaps = [(students[path].dense_weight() - layer.weight.detach()).abs().max()
                        for path, layer in originals.items()] if config.inf_norm_weight else []
                loss = pela_loss(config, paths, features, teacher, logits, gaps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
    finally:
        optimizer.zero_grad(set_to_none=True)
        for p in others:
            p.requires_grad_(True)
        model.train(training)
    return losses


@register("pela")
class Pela(SvdCompressor):
    config_class = PelaConfig
    paper = "PELA: Learning Parameter-Efficient Models with Low-Rank Approximation (CVPR 2024)"
    url = "https://arxiv.org/abs/2310.10700"

    @classmethod
    def after_install(cls, model: nn.Module, config: PelaConfig, originals: dict[str, nn.Linear],
                      calibration: Iterable | None) -> None:
        if not config.steps:
            return
        batches = list(calibration) if calibration is not None else []
        if not batches:
            raise ConfigError("pela distils the low-rank model against the original on unlabeled batches: "
                              "pass calibration= (batches of model inputs), or steps=0 for the SVD alone.")
        distill(model, originals, batches, config)
