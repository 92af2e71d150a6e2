"""Bit packing, RTN, binarization and magnitude masks: the base compressions' math."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankwise.linalg import binarize, magnitude_mask, pack_bits, rtn_dequantize, rtn_quantize, unpack_bits


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), count=st.integers(1, 300), seed=st.integers(0, 10_000))
def test_packing_round_trips_any_width_in_the_least_bytes(bits, count, seed):
    codes = torch.randint(0, 2**bits, (count,), generator=torch.Generator().manual_seed(seed))
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-count * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, count), codes)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_rtn_error_is_at_most_half_a_step_and_codes_fit(bits):
    weight = torch.randn(6, 64)
    codes, scales, zeros = rtn_quantize(weight, bits, group_size=16)
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    error = (rtn_dequantize(codes, scales, zeros) - weight).abs().reshape(6, 4, 16)
    # min and max of each group are on the grid up to the rounded zero point: half a step, plus one
    assert (error <= scales[..., None] * 1.0 + 1e-6).all()
    assert error.mean() < scales.mean() / 2


def test_rtn_reproduces_weights_already_on_its_grid():
    scales = torch.rand(3, 2) + 0.1
    codes = torch.randint(0, 16, (3, 32))
    codes[:, 0], codes[:, 1], codes[:, 16], codes[:, 17] = 0, 15, 0, 15  # each group spans the grid
    weight = rtn_dequantize(codes, scales, torch.full((3, 2), 8.0))
    new_codes, new_scales, new_zeros = rtn_quantize(weight, 4, 16)
    torch.testing.assert_close(rtn_dequantize(new_codes, new_scales, new_zeros), weight)


def test_binarization_scale_is_the_l2_optimal_one():
    weight = torch.randn(5, 40)
    signs, alpha = binarize(weight)
    sign = signs.float() * 2 - 1
    optimal = (weight * sign).sum(1) / sign.square().sum(1)  # argmin_a ‖W_row − a·sign‖²
    torch.testing.assert_close(alpha, optimal)


def test_magnitude_masks_keep_the_largest_weights():
    weight = torch.randn(8, 32)
    mask = magnitude_mask(weight, n=2, m=4)
    assert (mask.reshape(8, 8, 4).sum(-1) == 2).all()
    blocks, kept = weight.abs().reshape(8, 8, 4), mask.reshape(8, 8, 4)
    smallest_kept = blocks[kept].reshape(8, 8, 2).min(-1).values
    assert (smallest_kept >= blocks[~kept].reshape(8, 8, 2).max(-1).values).all()
    unstructured = magnitude_mask(weight, sparsity=0.75)
    assert unstructured.sum() == 64
    assert weight.abs()[unstructured].min() >= weight.abs()[~unstructured].max()
