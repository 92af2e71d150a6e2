"""OrthoMerge's pieces: Cayley maps, Procrustes, the Lie-algebra merge, and the full layer merge."""

import pytest
import torch

from rankwise.errors import ConfigError
from rankwise.linalg.merging import task_arithmetic, ties
from rankwise.linalg.orthogonal import (
    cayley,
    conflict_targets,
    inverse_cayley,
    merge_rotations,
    orthomerge,
    procrustes_rotation,
)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _skew(n, seed=0, size=0.3):
    M = _randn(n, n, seed=seed)
    return size * (M - M.T) / 2


def _experts(shape, count=3, seed=0):
    """A base and fine-tunes of it: small low-rank updates, as merged LoRAs are."""
    W0 = _randn(*shape, seed=seed)
    return W0, [W0 + 0.1 * _randn(shape[0], 2, seed=seed + 10 + i) @ _randn(2, shape[1], seed=seed + 20 + i)
                for i in range(count)]


def _assert_orthogonal(R):
    torch.testing.assert_close(R.T @ R, torch.eye(R.shape[0], dtype=R.dtype), atol=1e-9, rtol=0)


def _assert_skew(A):
    torch.testing.assert_close(A, -A.T, atol=1e-12, rtol=0)


def test_cayley_is_the_formula_and_round_trips_with_its_inverse():
    A = _skew(7)
    I = torch.eye(7, dtype=torch.float64)
    R = cayley(A)
    torch.testing.assert_close(R, torch.linalg.inv(I - A) @ (I + A))
    _assert_orthogonal(R)
    torch.testing.assert_close(inverse_cayley(R), A)
    torch.testing.assert_close(cayley(inverse_cayley(R)), R)


@pytest.mark.parametrize("shape", [(12, 12), (16, 8), (6, 12)])
def test_procrustes_attains_the_optimum_and_every_r_is_orthogonal_and_every_a_skew(shape):
    W0, experts = _experts(shape)
    for W in experts:
        R = procrustes_rotation(W0, W)
        _assert_orthogonal(R)
        # min over O(in) of ‖W0 R − W‖² is ‖W0‖² + ‖W‖² − 2 ‖W0ᵀ W‖_* (the nuclear norm)
        optimum = W0.norm() ** 2 + W.norm() ** 2 - 2 * torch.linalg.matrix_norm(W0.T @ W, "nuc")
        torch.testing.assert_close((W0 @ R - W).norm() ** 2, optimum, atol=1e-8, rtol=1e-8)
        _assert_skew(inverse_cayley(R))
    A_star = merge_rotations([inverse_cayley(procrustes_rotation(W0, W)) for W in experts])
    _assert_skew(A_star)
    _assert_orthogonal(cayley(A_star))


def test_procrustes_recovers_a_known_rotation():
    W0 = _randn(10, 6)
    R_true = cayley(_skew(6, seed=3))
    torch.testing.assert_close(procrustes_rotation(W0, W0 @ R_true), R_true)


def test_procrustes_on_a_wide_layer_picks_the_rotation_nearest_the_identity():
    W0 = _randn(6, 12)  # W0ᵀ W0 has rank 6 of 12: U Vᵀ alone is arbitrary on the other 6 directions
    R = procrustes_rotation(W0, W0)
    torch.testing.assert_close(R, torch.eye(12, dtype=torch.float64))
    assert inverse_cayley(R).norm() < 1e-8


def test_magnitude_correction_gives_the_mean_norm_along_the_summed_direction():
    As = [_skew(5, seed=s, size=s + 1.0) for s in range(4)]
    norms = torch.stack([A.norm() for A in As])
    total = sum(As)
    for how, expected in (("mean", norms.mean()), ("median", norms.sort().values[1]), ("max", norms.max())):
        A_star = merge_rotations(As, how)
        torch.testing.assert_close(A_star.norm(), expected)
        torch.testing.assert_close(A_star / A_star.norm(), total / total.norm())
    assert (total / 4).norm() < norms.mean()  # what the plain average would have lost
    assert torch.equal(merge_rotations([As[0], -As[0]]), torch.zeros(5, 5, dtype=torch.float64))


def test_identical_experts_give_back_the_expert():
    W0, (W, *_) = _experts((10, 8))
    A = inverse_cayley(procrustes_rotation(W0, W))
    torch.testing.assert_close(merge_rotations([A, A, A]), A)
    for variant in ("G", "C"):
        torch.testing.assert_close(orthomerge(W0, [W, W, W], "ties", variant, scale=1.0, density=1.0), W)
        torch.testing.assert_close(orthomerge(W0, [W, W, W], "ta", variant, scale=1 / 3), W)
    torch.testing.assert_close(orthomerge(W0, [W], "ta", scale=1.0), W)


def test_conflict_targets_keep_only_rows_against_the_mean_delta():
    W0 = _randn(2, 2)
    d1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    d2 = torch.tensor([[-3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # mean delta rows: (-1, 0) and (0, 1); only d1's first row points against its mean row
    T1, T2 = conflict_targets(W0, [W0 + d1, W0 + d2])
    torch.testing.assert_close(T1, W0 + torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(T2, W0)


@pytest.mark.parametrize("variant", ["G", "C"])
def test_orthomerge_is_the_rotated_base_plus_scaled_merged_residuals(variant):
    W0, experts = _experts((9, 7), count=3, seed=4)
    targets = conflict_targets(W0, experts) if variant == "C" else experts
    As = [inverse_cayley(procrustes_rotation(W0, T)) for T in targets]
    rotated = W0 @ cayley(merge_rotations(As))
    residuals = [W - W0 @ cayley(A) for W, A in zip(experts, As)]
    torch.testing.assert_close(orthomerge(W0, experts, "ta", variant),
                               rotated + 0.2 * task_arithmetic(residuals, [1, 1, 1]))
    torch.testing.assert_close(orthomerge(W0, experts, "ties", variant, density=0.3),
                               rotated + ties(residuals, [1, 1, 1], 0.3))


@pytest.mark.parametrize("call, match", [
    (lambda W0, Ws: orthomerge(W0, [Ws[0], Ws[1][:, :3]]), "expert 1 has shape"),
    (lambda W0, Ws: orthomerge(W0, Ws, residual="dare"), "residual"),
    (lambda W0, Ws: orthomerge(W0, Ws, variant="X"), "variant"),
    (lambda W0, Ws: orthomerge(W0, Ws, how="min"), "how"),
    (lambda W0, Ws: orthomerge(W0, Ws, "ties", density=0.0), "density 0.0 of input 0"),
    (lambda W0, Ws: orthomerge(W0, []), "at least one"),
    (lambda W0, Ws: merge_rotations([W0[:4, :4], W0[:3, :3]]), "input 1"),
])
def test_bad_inputs_raise_config_errors(call, match):
    W0, experts = _experts((6, 5), count=2)
    with pytest.raises(ConfigError, match=match):
        call(W0, experts)
