"""Gate math shared by the gated LoRA methods (SoRA, CoDyRA, Bayesian-LoRA); plain functions, no modules.

- Proximal L1 step (SoRA, CoDyRA): soft_threshold, and a stepped threshold ramp.
- Hard-concrete gates (Louizos, Welling, Kingma 2018, "Learning Sparse Neural Networks through L0
  Regularization"): a stretched, clamped binary-concrete variable with exact zeros and ones whose
  sample is differentiable in its log-odds log α.
- Bayesian-Bits nested quantization (van Baalen et al. 2020): a tensor written as a 2-bit value plus
  the residuals that take it to 4, 8, 16 bits and to full precision; gating residual k (and all
  finer ones) off leaves the tensor on the coarser grid.
"""

from __future__ import annotations

import math

import torch

# Hard-concrete constants from Louizos et al.: temperature and the stretch interval (γ, ζ) ⊃ [0, 1].
TEMPERATURE, STRETCH_LOW, STRETCH_HIGH = 2.0 / 3.0, -0.1, 1.1
# Bit-widths of the nested quantizer; the last level is "full precision" (the exact remainder).
BIT_LEVELS = (2, 4, 8, 16, 32)


def soft_threshold(values: torch.Tensor, tau: float) -> torch.Tensor:
    """The proximal operator of tau·‖·‖₁: sign(v)·max(|v| − tau, 0)."""
    return torch.sign(values) * torch.clamp(values.abs() - tau, min=0.0)


def stepped_ramp(step: int, start: float, end: float, values: int, every: int) -> float:
    """Piecewise-constant ramp over linspace(start, end, values), moving one value every `every` steps."""
    if values <= 1 or every <= 0:
        return start
    index = min(step // every, values - 1)
    return start + (end - start) * index / (values - 1)


def hard_concrete_sample(log_alpha: torch.Tensor, shape: torch.Size | tuple) -> torch.Tensor:
    """Reparameterised gate samples in [0, 1] of `shape` (broadcast with log_alpha's trailing dims)."""
    u = torch.rand(shape, device=log_alpha.device, dtype=log_alpha.dtype).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / TEMPERATURE)
    return torch.clamp(s * (STRETCH_HIGH - STRETCH_LOW) + STRETCH_LOW, 0.0, 1.0)


def hard_concrete_open(log_alpha: torch.Tensor) -> torch.Tensor:
    """Deterministic (test-time) gates: 1 where log α > 0, i.e. the noise-free gate exceeds 1/2."""
    return (log_alpha > 0).to(log_alpha.dtype)


def hard_concrete_p_open(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(gate ≠ 0) = sigmoid(log α − β·log(−γ/ζ)), the differentiable L0 cost of a gate."""
    return torch.sigmoid(log_alpha - TEMPERATURE * math.log(-STRETCH_LOW / STRETCH_HIGH))


def _round_ste(values: torch.Tensor) -> torch.Tensor:
    """round() in the forward pass, identity in the backward pass (straight-through estimator)."""
    return values + (torch.round(values) - values).detach()


def nested_quantization(x: torch.Tensor) -> list[torch.Tensor]:
    """[x₂, ε₄, ε₈, ε₁₆, ε₃₂] with x₂ + ε₄ + … + ε₃₂ = x and x₂ + … + ε_b = x on the b-bit grid.

    Symmetric range ±max|x|; the 2-bit step is 2·max|x|/3 and each finer step divides the previous
    one by 2^b + 1 (so every grid contains the coarser one: Bayesian Bits' construction). The last
    residual is the exact remainder, so with every gate open the tensor is unchanged. Gradients reach
    x through x₂ only (straight-through), and reach the gates through the residuals' values.
    """
    step = 2 * x.detach().abs().amax().clamp_min(1e-12) / (2 ** BIT_LEVELS[0] - 1)
    terms, covered = [], torch.zeros_like(x)
    for bits in BIT_LEVELS[:-1]:
        term = step * _round_ste((x - covered) / step)
        terms.append(term)
        covered = covered + term
        step = step / (2**bits + 1)
    terms.append(x - covered)
    return terms


def chained(gates: torch.Tensor) -> torch.Tensor:
    """Coefficients (1, z₄, z₄z₈, …) of the nested terms from the residual gates (…, levels − 1)."""
    ones = torch.ones_like(gates[..., :1])
    return torch.cat([ones, torch.cumprod(gates, dim=-1)], dim=-1)


def expected_bits(p_open: torch.Tensor) -> torch.Tensor:
    """E[bit-width] = 2 + Σ_k (b_k − b_{k−1}) Π_{j≤k} P(z_j ≠ 0) for independent nested gates."""
    increments = torch.tensor(
        [b - a for a, b in zip(BIT_LEVELS, BIT_LEVELS[1:])], dtype=p_open.dtype, device=p_open.device
    )
    return BIT_LEVELS[0] + (increments * torch.cumprod(p_open, dim=-1)).sum(-1)
