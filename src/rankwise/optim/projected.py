"""ProjectedAdamW: AdamW whose moments live in a low-rank projection of each 2-D gradient, as in GaLore.

Papers: GaLore (Zhao et al., ICML 2024, arXiv 2403.03507) and the SVD-free DCT projection (Modoranu et
al., arXiv 2505.17967); the projectors themselves are in rankwise.optim.projectors. For a projected
weight W (m×n) with basis P (d×r, d = min(m, n)), step t = 1, 2, …:

    if (t − 1) % T == 0:  P ← projector(G_t)                    (GaLore's schedule: steps 1, T+1, 2T+1, …)
    R_t = project(G_t, P)                                      (G P, m×r, if m >= n; else Pᵀ G, r×n)
    M_t = β1 M + (1 − β1) R_t,    V_t = β2 V + (1 − β2) R_t²
    N_t = (M_t / (1 − β1ᵗ)) / (√(V_t / (1 − β2ᵗ)) + ε)
    W  ← W (1 − lr λ) − lr · α · project_back(N_t, P)           (decoupled decay on the full W)

Every parameter trains; the projection only shrinks the optimizer state of W from 2·m·n to 2·m·r (or
2·r·n) plus the basis. As in GaLore, the moments are neither reset nor rotated when P changes. The
AdamW rule (`adamw_update`) is written once and shared by every projector kind and by plain parameters.

Opt-in, per parameter group as GaLore does: a group with `rank` (and optionally `update_interval`,
default 200; `scale` α, default 0.25; `projector`, one of rankwise.optim.projectors.PROJECTORS, default
"svd") is projected. Rule: a parameter of such a group that is not 2-D, or whose smaller dimension is
<= rank (a projection that keeps every direction saves nothing), gets plain AdamW, as do groups without
`rank`. A rank that is not a positive integer is a ConfigError naming the parameter's shape.

Where we differ from GaLore's code: its AdamW (from transformers) adds ε to √V before bias correction and
decays W after the update; we follow torch.optim.AdamW (decay first, ε after correction), as the DCT
paper's code does. The differences are O(ε) and O(lr²λ), and in exchange a plain parameter gets exactly
torch's AdamW, and while P is fixed the coordinates Y = project(W, P) of a projected one follow torch's
AdamW fed project(G, P) exactly (for α = 1; scaled by α otherwise; tests/optim/test_projected.py). At
full rank P is a rotation, and Adam's elementwise normalization is not rotation-invariant: that is AdamW
in rotated coordinates, equal to plain AdamW only when P is a signed permutation. Our eps default is
torch's 1e-8 (GaLore's class uses 1e-6). Every kind refreshes on GaLore's schedule; the DCT paper's code
refreshes at steps 1, T, 2T, … instead.

ProjectedAdafactor is the same optimizer with Adafactor's rule (rankwise.optim.rules, GaLore's
"GaLore-Adafactor"): every factory takes update="adafactor", and `adafactor` alone is the full-rank one.

State, per projected parameter: step (int), exp_avg and exp_avg_sq (projected shape), and the basis as
tensors — `basis` (d×r) for svd/random, `basis_columns` (r indices into the shared DCT matrix) for dct —
so state_dict() holds only tensors and numbers (safetensors + JSON) and a resume restores the exact basis
without recomputing it. Determinism: the loop averages accumulated gradients and all-reduces
data-parallel gradients before step(), so the svd and dct bases are computed from the same gradient on
every rank; the random basis is seeded from (seed, step, parameter index), never from the global RNG.
"""

from __future__ import annotations

import math
import numbers
import time

import torch

from ..errors import ConfigError
from .projectors import PROJECTORS
from .registry import OPTIMIZERS
from .rules import adafactor_update, adamw_update

DEFAULT_RANK = 128  # GaLore's 60M script; applies to matrices whose smaller dimension exceeds it
DEFAULT_UPDATE_INTERVAL = 200  # GaLore's scripts' update_proj_gap (its argparse default, 50, is not used)
DEFAULT_SCALE = 0.25  # GaLore's scripts' galore_scale


def _positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _check_group(group: dict) -> None:
    """Fill a projected group's defaults and check its settings; plain groups pass untouched."""
    if "rank" not in group:
        return
    shapes = [tuple(p.shape) for p in group["params"]]
    shape = next((s for s in shapes if len(s) == 2), shapes[0] if shapes else ())
    where = f"ProjectedAdamW group with the parameter of shape {shape}"
    if not _positive_int(group["rank"]):
        raise ConfigError(f"{where}: rank {group['rank']!r} is not a positive integer; give e.g. rank=4, "
                          "or drop rank for plain AdamW.")
    group.setdefault("update_interval", DEFAULT_UPDATE_INTERVAL)
    group.setdefault("scale", DEFAULT_SCALE)
    group.setdefault("projector", "svd")
    if not _positive_int(group["update_interval"]):
        raise ConfigError(f"{where}: update_interval {group['update_interval']!r} is not a positive "
                          "integer; give the number of steps between projection updates, e.g. 200.")
    scale = group["scale"]
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool) or not math.isfinite(scale):
        raise ConfigError(f"{where}: scale {scale!r} is not a finite number; GaLore uses 0.25.")
    if group["projector"] not in PROJECTORS:
        raise ConfigError(f"{where}: unknown projector {group['projector']!r}; "
                          f"use one of {', '.join(sorted(PROJECTORS))}.")


class ProjectedAdamW(torch.optim.Optimizer):
    """AdamW with GaLore-style low-rank projected moments for groups that set `rank`; see the module
    docstring for the rule, the state and the defaults. `seed` seeds the random projector only.
    `projection_seconds` adds up the wall time spent choosing bases (a diagnostic, never saved)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, seed: int = 0):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "seed": seed}
        super().__init__(params, defaults)
        self.projection_seconds = 0.0

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        try:
            _check_group(self.param_groups[-1])
        except ConfigError:
            self.param_groups.pop()
            raise

    @staticmethod
    def is_projected(param: torch.Tensor, group: dict) -> bool:
        """The opt-in rule: the group has a rank, the parameter is 2-D and rank < min(m, n)."""
        return "rank" in group and param.ndim == 2 and group["rank"] < min(param.shape)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = -1  # the parameter's position over all groups: the random projector's seed needs it
        for group in self.param_groups:
            for param in group["params"]:
                index += 1
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise ConfigError(f"ProjectedAdamW: the parameter of shape {tuple(param.shape)} has a "
                                      "sparse gradient; use a dense embedding or torch.optim.SparseAdam.")
                self._step_parameter(param, group, index)
        return loss

    def basis_for(self, param: torch.Tensor, grad: torch.Tensor, group: dict, index: int):
        """The projection basis for this step (None: not projected), chosen from `grad` anew on GaLore's
        schedule (steps 1, T+1, 2T+1, ...) or when the state holds none."""
        if not self.is_projected(param, group):
            return None
        state, projector = self.state[param], PROJECTORS[group["projector"]]
        done = state.get("step", 0)
        if done % group["update_interval"] == 0 or any(key not in state for key in projector.state_keys):
            started = time.perf_counter()
            state.update(projector.refresh(grad, group["rank"], group["seed"], done, index))
            self.projection_seconds += time.perf_counter() - started
        return projector.basis(state, param)

    def _step_parameter(self, param: torch.Tensor, group: dict, index: int) -> None:
        basis = self.basis_for(param, param.grad, group, index)
        adamw_update(param, param.grad, self.state[param], lr=group["lr"], betas=group["betas"],
                     eps=group["eps"], weight_decay=group["weight_decay"], basis=basis,
                     scale=group.get("scale", 1.0))

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load, except that the basis keeps its saved dtype (torch casts every floating state
        tensor to its parameter's dtype, and would turn DCT column indices into floats)."""
        super().load_state_dict(state_dict)
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        basis_keys = {key for projector in PROJECTORS.values() for key in projector.state_keys}
        for saved_id, param in zip(saved_ids, params, strict=True):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                if key in basis_keys:
                    self.state[param][key] = value.to(device=param.device, copy=True)


class ProjectedAdafactor(ProjectedAdamW):
    """ProjectedAdamW's projection and opt-in with Adafactor's rule (rankwise.optim.rules.adafactor_update:
    factored second moment, no first moment, update clipping); betas and eps are not used."""

    def _step_parameter(self, param: torch.Tensor, group: dict, index: int) -> None:
        basis = self.basis_for(param, param.grad, group, index)
        adafactor_update(param, param.grad, self.state[param], lr=group["lr"],
                         weight_decay=group["weight_decay"], basis=basis, scale=group.get("scale", 1.0))


UPDATES = {"adamw": ProjectedAdamW, "adafactor": ProjectedAdafactor}  # the `update` option of the factories


def _projected(kind: str, groups, lr: float, weight_decay: float, betas, eps: float, rank: int,
               update_interval: int, scale: float, seed: int = 0, update: str = "adamw") -> ProjectedAdamW:
    """The optimizer of `update`'s rule with projector `kind`; each group holding a 2-D parameter gets
    rank, update_interval, scale and projector unless it sets them itself. Others (norms, biases) get the
    plain rule."""
    if update not in UPDATES:
        raise ConfigError(f"unknown update rule {update!r}; use one of {', '.join(UPDATES)}.")
    groups = list(groups)
    if groups and torch.is_tensor(groups[0]):
        groups = [{"params": groups}]
    settings = {"rank": rank, "update_interval": update_interval, "scale": scale, "projector": kind}
    projected = []
    for group in groups:
        params = group["params"]
        group = {**group, "params": [params] if torch.is_tensor(params) else list(params)}
        projected.append({**settings, **group} if any(p.ndim == 2 for p in group["params"]) else group)
    return UPDATES[update](projected, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, seed=seed)


@OPTIMIZERS.register("galore")
def galore(groups: list[dict], lr: float, weight_decay: float = 0.0,
           betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, rank: int = DEFAULT_RANK,
           update_interval: int = DEFAULT_UPDATE_INTERVAL, scale: float = DEFAULT_SCALE,
           update: str = "adamw") -> ProjectedAdamW:
    """GaLore: AdamW (or update="adafactor") in the span of each 2-D gradient's top-r singular vectors
    (projector "svd")."""
    return _projected("svd", groups, lr, weight_decay, betas, eps, rank, update_interval, scale,
                      update=update)


@OPTIMIZERS.register("dct")
def dct(groups: list[dict], lr: float, weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, rank: int = DEFAULT_RANK,
        update_interval: int = DEFAULT_UPDATE_INTERVAL, scale: float = DEFAULT_SCALE,
        update: str = "adamw") -> ProjectedAdamW:
    """SVD-free DCT-AdamW: AdamW (or update="adafactor") in the span of the r DCT-II columns with the
    largest ℓ1 gradient coefficients (projector "dct"). GaLore's defaults, for a like-for-like comparison;
    the paper's own code uses update_interval 1 and no scale (scale=1.0)."""
    return _projected("dct", groups, lr, weight_decay, betas, eps, rank, update_interval, scale,
                      update=update)


@OPTIMIZERS.register("random")
def random(groups: list[dict], lr: float, weight_decay: float = 0.0,
           betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, rank: int = DEFAULT_RANK,
           update_interval: int = DEFAULT_UPDATE_INTERVAL, scale: float = DEFAULT_SCALE,
           seed: int = 0, update: str = "adamw") -> ProjectedAdamW:
    """AdamW (or update="adafactor") in the span of a seeded random orthonormal basis, re-drawn every
    update_interval steps (projector "random")."""
    return _projected("random", groups, lr, weight_decay, betas, eps, rank, update_interval, scale, seed,
                      update)


@OPTIMIZERS.register("adafactor")
def adafactor(groups: list[dict], lr: float, weight_decay: float = 0.0) -> ProjectedAdafactor:
    """Adafactor at full rank (rankwise.optim.rules.adafactor_update with explicit lr, as GaLore's scripts
    run transformers' Adafactor): the anchor for update="adafactor"."""
    groups = list(groups)
    return ProjectedAdafactor(groups if groups and isinstance(groups[0], dict) else [{"params": groups}],
                              lr=lr, weight_decay=weight_decay)
