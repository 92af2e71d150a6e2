"""RMM's basis and coefficients: exact at k = n, Eckart–Young optimal below, against direct SVDs."""

import pytest
import torch

from rankwise.errors import ConfigError
from rankwise.linalg.rmm import rmm_basis, rmm_revert

M, R, D = 7, 3, 5  # out, rank, in


def _tasks(n=4, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(M, R, generator=gen, dtype=dtype), torch.randn(R, D, generator=gen, dtype=dtype))
            for _ in range(n)]


def _squared_error(tasks, basis, coefficients):
    total = 0.0
    for i, (B, A) in enumerate(tasks):
        B_hat, A_hat = rmm_revert(basis, coefficients, i)
        total += (B - B_hat).square().sum() + (A - A_hat).square().sum()
    return total


def _positions(tasks):
    """(positions, r, n): rows of every B_i, then columns of every A_i, computed directly."""
    return torch.stack([torch.cat([B, A.T]) for B, A in tasks], dim=-1)


@pytest.mark.parametrize("shared", [False, True])
def test_k_equal_n_reconstructs_every_task_exactly(shared):
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        tasks = _tasks(4, dtype)
        basis, coefficients = rmm_basis(tasks, k=4, shared=shared)
        for i, (B, A) in enumerate(tasks):
            B_hat, A_hat = rmm_revert(basis, coefficients, i)
            torch.testing.assert_close(B_hat, B, atol=tol, rtol=tol)
            torch.testing.assert_close(A_hat, A, atol=tol, rtol=tol)


def test_shapes_of_the_basis_models_and_coefficients():
    (B_basis, A_basis), (C_B, C_A) = rmm_basis(_tasks(4), k=2)
    assert B_basis.shape == (2, M, R) and A_basis.shape == (2, R, D)
    assert C_B.shape == (M, 2, 4) and C_A.shape == (D, 2, 4)
    _, (C_B, C_A) = rmm_basis(_tasks(4), k=2, shared=True)
    assert C_B.shape == C_A.shape == (1, 2, 4)


@pytest.mark.parametrize("k", [1, 2])
def test_per_position_error_is_the_dropped_singular_values_of_each_position(k):
    tasks = _tasks(4)
    expected = sum(torch.linalg.svdvals(X)[k:].square().sum() for X in _positions(tasks))
    torch.testing.assert_close(_squared_error(tasks, *rmm_basis(tasks, k)), expected)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shared_error_is_the_dropped_singular_values_of_the_stacked_layer(k):
    tasks = _tasks(4)
    stacked = _positions(tasks).reshape(-1, 4)
    expected = torch.linalg.svdvals(stacked)[k:].square().sum()
    shared_error = _squared_error(tasks, *rmm_basis(tasks, k, shared=True))
    torch.testing.assert_close(shared_error, expected)
    assert _squared_error(tasks, *rmm_basis(tasks, k)) <= shared_error + 1e-12


def test_one_basis_model_beats_averaging_the_factors():
    # the average, used for every task, is one particular rank-1 fit; Eckart–Young's is the best one
    tasks = _tasks(4, seed=1)
    mean_B, mean_A = sum(B for B, _ in tasks) / 4, sum(A for _, A in tasks) / 4
    averaged = sum((B - mean_B).square().sum() + (A - mean_A).square().sum() for B, A in tasks)
    for shared in (False, True):
        assert _squared_error(tasks, *rmm_basis(tasks, 1, shared=shared)) < averaged


def test_more_basis_models_than_the_rank_are_exact_per_position():
    gen = torch.Generator().manual_seed(2)
    tasks = [(torch.randn(M, 2, generator=gen), torch.randn(2, D, generator=gen)) for _ in range(4)]
    basis, coefficients = rmm_basis(tasks, k=3)  # each position holds only r = 2 numbers per task
    assert _squared_error(tasks, basis, coefficients) < 1e-9


def test_a_single_task_comes_back():
    tasks = _tasks(1)
    B_hat, A_hat = rmm_revert(*rmm_basis(tasks, k=1), 0)
    torch.testing.assert_close(B_hat, tasks[0][0])
    torch.testing.assert_close(A_hat, tasks[0][1])


@pytest.mark.parametrize("call, match", [
    (lambda t: rmm_basis(t, k=0), "k=0"),
    (lambda t: rmm_basis(t, k=3), "k=3 basis models for 2 tasks"),
    (lambda t: rmm_basis([t[0], (t[1][0][:, :2], t[1][1][:2])], k=1), "task 1 has B"),
    (lambda t: rmm_basis([t[0], (t[1][0], t[1][1][:2])], k=1), "task 1 has B"),
    (lambda t: rmm_basis([], k=1), "at least one"),
    (lambda t: rmm_revert(*rmm_basis(t, k=1), 2), "task index 2"),
])
def test_bad_inputs_raise_config_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call(_tasks(2))
