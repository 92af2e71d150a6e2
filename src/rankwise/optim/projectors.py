"""Gradient projectors for low-rank optimizers: where a 2-D gradient is squeezed to rank r and back.

A projector keeps, per weight W (m×n), a basis P (d×r, orthonormal columns) of its smaller dimension
d = min(m, n), and maps the gradient G between full and low-rank space. The side follows GaLore's
`GaLoreProjector`, proj_type "std" (jiaweizzhao/GaLore, galore_torch/galore_projector.py):

    m >= n:  R = G P      (m×r),   back:  α · R Pᵀ      (GaLore stores Pᵀ, i.e. Vh[:r], r×n)
    m <  n:  R = Pᵀ G     (r×n),   back:  α · P R       (GaLore stores P = U[:, :r], m×r)

with α the `scale` applied on back-projection, as GaLore does. Every kind stores P as d×r columns.

Kinds, each re-choosing P at a projection update (every `update_interval` steps):
- `svd` — GaLore (Zhao, Zhang, Chen, Wang, Anandkumar, Tian, "GaLore: Memory-Efficient LLM Training by
  Gradient Low-Rank Projection", ICML 2024, arXiv 2403.03507): P = the top-r singular vectors of G on
  the smaller side (right vectors V_r if m >= n, left vectors U_r otherwise), computed in float32
  (float64 for float64 gradients). GaLore casts P back to the gradient's dtype; we keep it in float32,
  so a bf16 run projects with an fp32 basis.
- `dct` — Modoranu, Safaryan, Schultheis, Ryabinin, Chumachenko, Alistarh, "SVD-Free Low-Rank Adaptive
  Gradient Optimization for Large Language Models" (arXiv 2505.17967; code IST-DASLab/
  ISTA-DASLab-Optimizers, fft_low_rank/): Q is the fixed orthonormal DCT-II basis of size d, shared by
  every matrix of that size; at an update S = G Q (or Qᵀ G), each column (row) of S is scored by its ℓ1
  norm, and P = Q[:, topk(score, r)]. Only the r indices are state; Q is rebuilt from d by formula.
  The paper's code, in its default "matmul" mode, selects columns of its `dct3_matrix` (the transpose
  of the DCT-II matrix), while its FFT ("makhoul") mode selects DCT-II frequencies; we use the DCT-II
  basis (columns are cosines over positions), so S is each row's orthonormal DCT-II spectrum, as in the
  FFT mode. Not included: its error feedback (`use_ef`) and moment rotation (`rotate_subspace`).
- `random` — P = Q from the QR of a d×r standard Gaussian (R's diagonal made positive), re-drawn at
  every update. Its generator is seeded from (seed, step, parameter index) only, never from the global
  RNG, so data-parallel ranks draw the same basis and a resumed run continues the same sequence. (The
  DCT paper's code has a different random variant, "rqr": column selection in one fixed random rotation.)
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import ClassVar

import torch


def projects_right(shape: torch.Size | tuple[int, ...]) -> bool:
    """GaLore's "std" side rule: a tall or square matrix (m >= n) is projected on the right."""
    return shape[0] >= shape[1]


def project(grad: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The low-rank gradient: G P (m×r) when m >= n, else Pᵀ G (r×n)."""
    basis = basis.to(grad.dtype)
    return grad @ basis if projects_right(grad.shape) else basis.T @ grad


def project_back(low_rank: torch.Tensor, basis: torch.Tensor, shape: torch.Size | tuple[int, ...],
                 scale: float = 1.0) -> torch.Tensor:
    """α · R Pᵀ when the full shape (m, n) has m >= n, else α · P R."""
    basis = basis.to(low_rank.dtype)
    full = low_rank @ basis.T if projects_right(shape) else basis @ low_rank
    return full.mul_(scale)


def _basis_dtype(grad: torch.Tensor) -> torch.dtype:
    return torch.float64 if grad.dtype == torch.float64 else torch.float32


def _oriented(grad: torch.Tensor) -> torch.Tensor:
    """G or Gᵀ, whichever has the basis dimension d as its columns."""
    return grad if projects_right(grad.shape) else grad.T


def svd_basis(grad: torch.Tensor, rank: int) -> torch.Tensor:
    """GaLore's basis: the top `rank` singular vectors of G on its smaller side (d×r)."""
    _, _, vh = torch.linalg.svd(_oriented(grad).to(_basis_dtype(grad)), full_matrices=False)
    return vh[:rank].T.contiguous()


@functools.lru_cache(maxsize=16)
def dct_matrix(size: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """The orthonormal DCT-II basis as columns: Q[j, k] = √(c_k/d) cos(π k (2j+1) / (2d)), c_0 = 1, else 2.

    Built in float64 on the CPU, so it is bitwise the same on every run and device. Cached and shared:
    callers must not write to it.
    """
    positions = torch.arange(size, dtype=torch.float64)
    angles = torch.pi * torch.outer(2 * positions + 1, positions) / (2 * size)
    matrix = math.sqrt(2 / size) * torch.cos(angles)
    matrix[:, 0] *= math.sqrt(0.5)
    return matrix.to(dtype=dtype, device=device)


def dct_columns(grad: torch.Tensor, rank: int) -> torch.Tensor:
    """The paper's selection: the `rank` DCT-II columns whose coefficients S = G Q (or rows of Qᵀ G)
    have the largest ℓ1 norms, largest first."""
    oriented = _oriented(grad).to(_basis_dtype(grad))
    spectrum = oriented @ dct_matrix(oriented.shape[1], oriented.dtype, grad.device)
    return torch.topk(spectrum.abs().sum(dim=0), rank).indices


def _generator_seed(seed: int, step: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{step}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def random_basis(size: int, rank: int, seed: int, step: int, index: int,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An orthonormal d×r basis from a Gaussian draw, a pure function of (seed, step, index)."""
    generator = torch.Generator(device="cpu").manual_seed(_generator_seed(seed, step, index))
    gaussian = torch.randn(size, rank, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    # QR is unique once R's diagonal is positive; fix the signs so the basis does not depend on LAPACK.
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


class Projector:
    """How one kind chooses its basis. The basis itself lives in the optimizer's state, as tensors."""

    name: ClassVar[str]
    state_keys: ClassVar[tuple[str, ...]]

    def refresh(self, grad: torch.Tensor, rank: int, seed: int, step: int, index: int
                ) -> dict[str, torch.Tensor]:
        """The state entries that fix the new basis for `grad`'s parameter."""
        raise NotImplementedError

    def basis(self, state: dict, param: torch.Tensor) -> torch.Tensor:
        """The d×r basis that `state` holds for `param`."""
        return state["basis"]


class SvdProjector(Projector):
    name, state_keys = "svd", ("basis",)

    def refresh(self, grad, rank, seed, step, index):
        return {"basis": svd_basis(grad, rank)}


class DctProjector(Projector):
    name, state_keys = "dct", ("basis_columns",)

    def refresh(self, grad, rank, seed, step, index):
        return {"basis_columns": dct_columns(grad, rank)}

    def basis(self, state, param):
        return dct_matrix(min(param.shape), _basis_dtype(param), param.device)[:, state["basis_columns"]]


class RandomProjector(Projector):
    name, state_keys = "random", ("basis",)

    def refresh(self, grad, rank, seed, step, index):
        basis = random_basis(min(grad.shape), rank, seed, step, index, _basis_dtype(grad))
        return {"basis": basis.to(grad.device)}


PROJECTORS: dict[str, Projector] = {kind.name: kind()
                                    for kind in (SvdProjector, DctProjector, RandomProjector)}
