import torch

from rankwise.linalg import randomized_svd, truncated_svd


def _low_rank_plus_noise(out=60, inp=40, rank=5, noise=1e-3):
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(out, rank, generator=gen) @ torch.randn(rank, inp, generator=gen)
            + noise * torch.randn(out, inp, generator=gen))


def test_truncated_svd_is_the_best_rank_r_approximation():
    W = _low_rank_plus_noise()
    factors = truncated_svd(W, 5)
    assert factors.U.shape == (60, 5) and factors.S.shape == (5,) and factors.Vh.shape == (5, 40)
    # Eckart-Young: the error equals the norm of the dropped singular values.
    dropped = torch.linalg.svdvals(W)[5:]
    torch.testing.assert_close(torch.linalg.matrix_norm(W - factors.to_dense()), dropped.norm(),
                               rtol=1e-4, atol=1e-5)


def test_randomized_svd_recovers_the_top_spectrum():
    W = _low_rank_plus_noise()
    exact, fast = truncated_svd(W, 5), randomized_svd(W, 5, power_iters=2)
    torch.testing.assert_close(fast.S, exact.S, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.to_dense(), exact.to_dense(), rtol=1e-3, atol=1e-3)


def test_randomized_svd_is_reproducible_and_runs_in_float32():
    W = _low_rank_plus_noise().half()
    a, b = randomized_svd(W, 3, seed=7), randomized_svd(W, 3, seed=7)
    assert a.S.dtype == torch.float32 and torch.equal(a.S, b.S)
