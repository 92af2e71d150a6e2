"""Effective/stable rank on constructed spectra, WeLore labels, and the power-law fit on Pareto samples."""

import math

import numpy as np
import pytest
import torch

from rankwise.analyze import (
    effective_rank,
    esd,
    powerlaw_alpha,
    singular_values,
    stable_rank,
    welore_label,
    welore_tau,
)


def _with_spectrum(s, m=12, n=8, seed=0):
    """An m × n matrix with exactly the singular values `s` (random orthonormal U, V)."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, len(s), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, len(s), generator=g, dtype=torch.float64))
    return (U * torch.tensor(s, dtype=torch.float64)) @ V.T


def test_singular_values_are_those_constructed():
    s = [5.0, 3.0, 2.0, 1.0, 0.5]
    got = singular_values(_with_spectrum(s).float())
    assert len(got) == 8 and got[:5] == pytest.approx(s, rel=1e-5) and max(got[5:]) < 1e-5


def test_effective_rank_counts_equal_singular_values_and_ignores_zeros():
    assert effective_rank([1.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert effective_rank([2.0] * 4 + [0.0] * 4) == pytest.approx(4.0)
    p = np.array([3.0, 1.0]) / 4
    assert effective_rank([3.0, 1.0]) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_stable_rank_is_frobenius_over_spectral_norm_squared():
    W = _with_spectrum([4.0, 2.0, 2.0, 1.0]).float()
    s = singular_values(W)
    expected = float(torch.linalg.matrix_norm(W) ** 2 / torch.linalg.matrix_norm(W, ord=2) ** 2)
    assert stable_rank(s) == pytest.approx(expected, rel=1e-5)
    assert stable_rank(s) == pytest.approx((16 + 4 + 4 + 1) / 16, rel=1e-5)
    assert stable_rank([1.0, 1.0, 1.0]) == pytest.approx(3.0)


def test_welore_label_prunes_normalised_singular_values_below_tau():
    s = [10.0, 9.0, 1.5, 1.2, 1.0]  # normalised: 1, .89, .056, .022, 0
    low = welore_label(s, tau=0.1, min_ratio=0.5)
    assert low == {"label": "LRC", "k_prune": 3, "rank_kept": 2, "prune_ratio": 0.6}
    assert welore_label([10.0, 9.0, 8.0, 7.0, 1.0], tau=0.1, min_ratio=0.5)["label"] == "N-LRC"
    assert welore_label(s, tau=0.0)["k_prune"] == 0


def test_welore_tau_reaches_the_target_reduction():
    spectra = [sorted(np.random.default_rng(i).pareto(2.0, 50) + 1, reverse=True) for i in range(4)]
    tau = welore_tau(spectra, 0.5)
    pruned = sum(welore_label(s, tau)["k_prune"] for s in spectra)
    assert 100 <= pruned <= 100 + 4  # within one rank per matrix of 50 % of 200


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_powerlaw_alpha_recovers_the_pareto_exponent(alpha):
    # Pareto density ∝ x^{-alpha} for x ≥ 1: inverse-CDF sampling x = u^{-1/(alpha-1)}.
    u = np.random.default_rng(0).uniform(size=4000)
    fit = powerlaw_alpha(u ** (-1 / (alpha - 1)))
    assert fit["alpha"] == pytest.approx(alpha, abs=4 * fit["sigma"] + 0.05)
    assert 0 < fit["D"] < 0.05 and fit["xmin"] >= 1.0 and fit["n_tail"] > 100


def test_powerlaw_alpha_is_scale_invariant_and_skips_tiny_layers():
    lam = esd(singular_values(torch.randn(64, 32, generator=torch.Generator().manual_seed(0))))
    a, b = powerlaw_alpha(lam), powerlaw_alpha([x * 7.0 for x in lam])
    assert a["alpha"] == pytest.approx(b["alpha"]) and a["D"] == pytest.approx(b["D"])
    assert b["xmin"] == pytest.approx(7.0 * a["xmin"])
    assert powerlaw_alpha([1.0, 2.0, 3.0])["alpha"] is None
