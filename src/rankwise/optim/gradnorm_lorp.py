"""GradNormLoRP: AdamW on a weight-normalized weight, its direction's moments kept in a GaLore subspace.

Paper: Jia-Hong Huang, Yixian Shen, Hongyi Zhu, Stevan Rudinac, Evangelos Kanoulas, "Gradient Weight-
normalized Low-rank Projection for Efficient LLM Training" (AAAI 2025, arXiv 2412.19616); code:
github.com/Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training
(GradNormLoRP/LowRankWeightNormAdamW.py, which test_fine.py --enable_lowrank uses; the README's pre-training
name weight_norm_galore_adamw exists only in test_train.py, as wadamw.py's variant, which never writes W
back).

Each opted-in weight W (m×n, PyTorch's (out, in) layout) is trained as W = g ⊙ V / ‖V‖_row, one
magnitude g_i per output row (Salimans & Kingma's weight normalization, per neuron), with V₀ = W₀ and
g₀ = ‖W₀‖_row, so W does not move at step 0. With G = ∇_W L at the current W, per row i, V̂ = V / ‖V‖:

    ∇g_i = ⟨G_i, V̂_i⟩,     ∇V_i = (g_i / ‖V_i‖) (G_i − ∇g_i V̂_i)       (the chain rule of W(V, g))
    V ← ProjectedAdamW's step on V fed ∇V: basis P from ∇V every T steps, moments of project(∇V, P)
        (r-dim), step α · project_back(N, P), decoupled decay (rankwise.optim.rules.adamw_update)
    g ← the same AdamW step, unprojected, fed ∇g
    W ← g ⊙ V / ‖V‖_row

What trains: V and g. Where each lives: the model keeps its plain weight W (no module is replaced, no
inference cost, checkpoints and merges see W); V and g are this optimizer's state ("direction" m×n,
"magnitude" m×1), and the optimizer rewrites W from them after every step, so a change made to W
elsewhere between steps is overwritten. Opt-in as in ProjectedAdamW: every 2-D parameter of a group
with `rank` is weight-normalized; its direction is projected when rank < min(m, n), else V gets
unprojected AdamW (no α); 1-D parameters and groups without `rank` get plain torch AdamW. A row of W that
is all zero has no direction: a ConfigError (e.g. the `full` adapter's zero ΔW; this method trains
the weights themselves, as the paper's code does with the base Linear weights).

Defaults (the registry's, galore's): rank 128, update_interval 200 (the class default), scale α 0.25;
the README's C4 pre-training of LLaMA 60M uses lr 0.01, galore_scale 0.25, rank 128, update_proj_gap 250,
its GLUE fine-tuning rank 4 (8 in the abstract), galore_scale 4, update_proj_gap 500, lr 3e-5.
State per normalized weight: direction m·n and magnitude m, V's moments 2·m·r (2·r·n if m < n; 2·m·n
unprojected) and basis, g's moments 2·m ("magnitude_exp_avg", "magnitude_exp_avg_sq"), one int step:
tensors only, so state_dict() goes to safetensors + JSON and a resume between projection updates is
bitwise. V and g are kept in the weight's dtype, as the code does.

Paper vs code, and what we follow. The paper (read in its abstract and a summary, not in full) states
w = δ v/‖v‖ and a two-sided projection U η(Uᵀ D V) Vᵀ; its summary also writes W as M (W₀ + IJ)/‖W₀ +
IJ‖_c with low-rank I, J, which the code does not have. LowRankWeightNormAdamW differs from the
reparameterization it states in ways we do not copy: (1) its ∇V = G g/‖V‖ keeps G's radial part; we
use the chain rule above, as its own other variant (weight_norm_galore.py) does, which removes it;
(2) it resets g to ‖V‖ and W to V at the start of every step, so a learned magnitude lasts one step; we
keep g; (3) it weight-normalizes every parameter of every group (1-D ones as one vector) and errs on
>2-D; we give plain AdamW outside rank groups. We follow its one-sided GaLore projector (side by shape,
as rankwise.optim.projectors) and its row norms. AdamW arithmetic is ProjectedAdamW's (torch's: decay
before the step, ε after bias correction, ε = 1e-8), where the code adds ε before correction (ε = 1e-6)
and decays V and g after the step. Not included: its 8-bit and Adafactor variants.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .projected import (
    DEFAULT_RANK,
    DEFAULT_SCALE,
    DEFAULT_UPDATE_INTERVAL,
    ProjectedAdamW,
    _projected,
)
from .registry import OPTIMIZERS
from .rules import adamw_update

MAGNITUDE_MOMENTS = {"exp_avg": "magnitude_exp_avg", "exp_avg_sq": "magnitude_exp_avg_sq"}


def row_norms(matrix: torch.Tensor) -> torch.Tensor:
    """‖V‖ of each row, as an m×1 column."""
    return torch.linalg.vector_norm(matrix, dim=1, keepdim=True)


def weight_norm_weight(direction: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """W = g ⊙ V / ‖V‖_row."""
    return magnitude * (direction / row_norms(direction))


def weight_norm_gradients(grad: torch.Tensor, direction: torch.Tensor, magnitude: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇V, ∇g) from G = ∇W for W = g ⊙ V/‖V‖_row: ∇g = ⟨G, V̂⟩ per row, ∇V = g/‖V‖ (G − ∇g V̂)."""
    norms = row_norms(direction)
    unit = direction / norms
    grad_magnitude = (grad * unit).sum(dim=1, keepdim=True)
    grad_direction = (magnitude / norms) * (grad - grad_magnitude * unit)
    return grad_direction, grad_magnitude


class GradNormLoRP(ProjectedAdamW):
    """ProjectedAdamW on the direction V and AdamW on the magnitude g of each weight-normalized weight
    W = g ⊙ V/‖V‖_row; see the module docstring for the rule, the state and the defaults."""

    @staticmethod
    def is_normalized(param: torch.Tensor, group: dict) -> bool:
        """Every 2-D parameter of a group with a rank is weight-normalized (projected or not)."""
        return "rank" in group and param.ndim == 2

    def _step_parameter(self, param: torch.Tensor, group: dict, index: int) -> None:
        if not self.is_normalized(param, group):
            super()._step_parameter(param, group, index)  # plain AdamW
            return
        state = self.state[param]
        if "direction" not in state:
            self._init_weight_norm(param, state)
        direction, magnitude = state["direction"], state["magnitude"]
        grad_direction, grad_magnitude = weight_norm_gradients(param.grad, direction, magnitude)
        done = state.get("step", 0)
        basis = self.basis_for(param, grad_direction, group, index)  # chosen from the direction's gradient
        settings = {"lr": group["lr"], "betas": group["betas"], "eps": group["eps"],
                    "weight_decay": group["weight_decay"]}
        adamw_update(direction, grad_direction, state, basis=basis, scale=group["scale"], **settings)
        # g's moments sit beside V's under their own keys; adamw_update sees them under its usual names.
        magnitude_state = {"step": done, **{key: state[saved] for key, saved in MAGNITUDE_MOMENTS.items()
                                            if saved in state}}
        adamw_update(magnitude, grad_magnitude, magnitude_state, **settings)
        state.update({saved: magnitude_state[key] for key, saved in MAGNITUDE_MOMENTS.items()})
        param.copy_(weight_norm_weight(direction, magnitude))

    @staticmethod
    def _init_weight_norm(param: torch.Tensor, state: dict) -> None:
        norms = row_norms(param.detach())
        if not bool((norms > 0).all()):
            raise ConfigError(f"gradnorm-lorp: the weight of shape {tuple(param.shape)} has an all-zero row, "
                              "which has no direction to normalize; train nonzero weights (not a zero-"
                              "initialized delta such as the `full` adapter's), or use galore.")
        state["direction"] = param.detach().clone(memory_format=torch.contiguous_format)
        state["magnitude"] = norms


@OPTIMIZERS.register("gradnorm-lorp")
def gradnorm_lorp(groups: list[dict], lr: float, weight_decay: float = 0.0,
                  betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, rank: int = DEFAULT_RANK,
                  update_interval: int = DEFAULT_UPDATE_INTERVAL, scale: float = DEFAULT_SCALE,
                  ) -> GradNormLoRP:
    """GradNormLoRP (svd projector): each group holding a 2-D parameter gets rank, update_interval and
    scale unless it sets them itself, exactly as galore's groups do; others (norms, biases) stay plain."""
    # galore's factory decides which groups opt in; reuse its groups so both opt in the same tensors.
    opted_in = _projected("svd", groups, lr, weight_decay, betas, eps, rank, update_interval, scale)
    return GradNormLoRP(opted_in.param_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
