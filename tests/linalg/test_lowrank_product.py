import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rankwise.linalg.lowrank_product import product_svd, randomized_product_svd


def _pair(out=50, inp=40, k=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(out, k, generator=gen), torch.randn(k, inp, generator=gen)


@pytest.mark.parametrize("rank", [None, 6, 3])
def test_product_svd_equals_the_svd_of_the_dense_product(rank):
    B, A = _pair()
    U, S, Vh = torch.linalg.svd(2.5 * B @ A, full_matrices=False)
    keep = 6 if rank is None else rank
    factors = product_svd(B, A, rank, scale=2.5)
    assert factors.U.shape == (50, keep) and factors.Vh.shape == (keep, 40)
    torch.testing.assert_close(factors.S, S[:keep], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(factors.to_dense(), (U[:, :keep] * S[:keep]) @ Vh[:keep], atol=1e-4, rtol=0)
    torch.testing.assert_close(factors.U.T @ factors.U, torch.eye(keep), atol=1e-5, rtol=0)
    torch.testing.assert_close(factors.Vh @ factors.Vh.T, torch.eye(keep), atol=1e-5, rtol=0)


def test_randomized_product_svd_matches_the_exact_one():
    B, A = _pair()
    exact, fast = product_svd(B, A, 4, scale=0.5), randomized_product_svd(B, A, 4, scale=0.5)
    torch.testing.assert_close(fast.S, exact.S, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fast.to_dense(), exact.to_dense(), atol=1e-4, rtol=0)


class _Shapes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("svd", [product_svd, randomized_product_svd])
def test_the_dense_product_is_never_formed(svd):
    B, A = _pair(out=600, inp=500, k=8)
    with _Shapes() as shapes:
        svd(B, A, 4)
    assert shapes.largest < 600 * 500 / 10  # nothing close to an (out, in) matrix
