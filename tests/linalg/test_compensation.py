"""EoRA's eigenspace compensation against a direct computation of its formula, and its optimality."""

import torch

from rankwise.linalg import eigen_compensation, svd_factors


def _data(seed=0, n=400, out=12, inp=20):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, inp, generator=gen, dtype=torch.float64) @ torch.randn(inp, inp, generator=gen,
                                                                               dtype=torch.float64)
    return torch.randn(out, inp, generator=gen, dtype=torch.float64), X, X.T @ X / n


def test_matches_the_papers_formula_computed_directly():
    error, _, C = _data()
    B, A = eigen_compensation(error, C, rank=5)
    lam, Q = torch.linalg.eigh(C)
    U, S, Vh = torch.linalg.svd(error @ Q @ torch.diag(lam.sqrt()))
    expected_B = U[:, :5] @ torch.diag(S[:5].sqrt())
    expected_A = torch.diag(S[:5].sqrt()) @ Vh[:5] @ torch.diag(lam.rsqrt()) @ Q.T
    torch.testing.assert_close(B @ A, expected_B @ expected_A)


def test_output_error_beats_plain_svd_and_vanishes_at_full_rank():
    error, X, C = _data(seed=1)
    for rank in (2, 6, 10):
        B, A = eigen_compensation(error, C, rank)
        B2, A2 = svd_factors(error, rank)
        eora = torch.linalg.matrix_norm((error - B @ A) @ X.T)
        plain = torch.linalg.matrix_norm((error - B2 @ A2) @ X.T)
        assert eora <= plain + 1e-9
        # Eckart–Young in the whitened space: the error is the dropped singular values, times √N
        lam, Q = torch.linalg.eigh(C)
        dropped = torch.linalg.svdvals(error @ Q * lam.sqrt())[rank:]
        torch.testing.assert_close(eora, dropped.square().sum().sqrt() * len(X) ** 0.5)
    B, A = eigen_compensation(error, C, rank=12)
    torch.testing.assert_close(B @ A, error)


def test_a_rank_deficient_moment_stays_finite():
    error, _, _ = _data(seed=2)
    x = torch.randn(3, 20, dtype=torch.float64)
    B, A = eigen_compensation(error, x.T @ x / 3, rank=4)  # rank-3 C: eigenvalues clamped, no inf
    assert torch.isfinite(B).all() and torch.isfinite(A).all()
