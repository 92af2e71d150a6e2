import math

import pytest
import torch

from rankwise.linalg.structured import balanced_factors, ldu, tt_matvec, tt_to_dense, tt_transpose


@pytest.mark.parametrize("shape", [(8, 8), (6, 10), (10, 6)])
def test_ldu_factors_have_their_shapes_and_reproduce_w(shape):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    f = ldu(W)
    k = min(shape)
    assert f.L.shape == (shape[0], k) and f.D.shape == (k,) and f.U.shape == (k, shape[1])
    torch.testing.assert_close(torch.diagonal(f.L), torch.ones(k))  # unit lower-triangular
    torch.testing.assert_close(torch.diagonal(f.U), torch.ones(k))  # unit upper-triangular
    assert torch.equal(torch.tril(f.U, -1), torch.zeros_like(f.U))
    assert torch.equal(torch.triu(f.L, 1), torch.zeros_like(f.L))
    assert sorted(f.rows.tolist()) == list(range(shape[0]))
    torch.testing.assert_close(f.to_dense(), W, atol=1e-5, rtol=0)


def test_tt_matvec_of_a_rank_one_train_is_a_kronecker_product():
    gen = torch.Generator().manual_seed(0)
    K, L = torch.randn(3, 2, generator=gen), torch.randn(4, 5, generator=gen)
    cores = [K[None, :, :, None], L[None, :, :, None]]
    torch.testing.assert_close(tt_to_dense(cores), torch.kron(K, L))


def test_tt_matvec_agrees_with_the_dense_matrix_entry_by_entry():
    gen = torch.Generator().manual_seed(0)
    cores = [torch.randn(1, 2, 3, 2, generator=gen), torch.randn(2, 3, 2, 3, generator=gen),
             torch.randn(3, 2, 2, 1, generator=gen)]
    M = tt_to_dense(cores)
    assert M.shape == (12, 12)
    o, i = (1, 2, 0), (2, 1, 1)
    entry = cores[0][:, o[0], i[0]] @ cores[1][:, o[1], i[1]] @ cores[2][:, o[2], i[2]]
    assert M[o[0] * 6 + o[1] * 2 + o[2], i[0] * 4 + i[1] * 2 + i[2]] == pytest.approx(entry.item(), abs=1e-5)
    x = torch.randn(2, 5, 12, generator=gen)
    torch.testing.assert_close(tt_matvec(cores, x), x @ M.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(tt_to_dense(tt_transpose(cores)), M.T)


@pytest.mark.parametrize("n, parts", [(32, 2), (4096, 3), (11008, 2), (11, 2), (64, 3)])
def test_balanced_factors_multiply_back(n, parts):
    factors = balanced_factors(n, parts)
    assert len(factors) == parts and math.prod(factors) == n
