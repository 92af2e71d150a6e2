"""LumaFlux's RQ spline tone decoder: monotonicity, the closed-form inverse, the identity, the formula at a
hand-computed point, PQ / sRGB / Reinhard against their standards, and bad input."""

from __future__ import annotations

import pytest
import torch

from rankwise.apps.tone_spline import (
    PQ_C1,
    PQ_M2,
    ToneSpline,
    bin_sizes,
    knot_derivatives,
    linear_to_srgb,
    pq_decode,
    pq_encode,
    reinhard,
    reinhard_inverse,
    relative_luminance,
    rq_spline,
    rq_spline_inverse,
    srgb_to_linear,
)
from rankwise.errors import ConfigError


def random_curve(seed: int, bins: int, dtype=torch.float64, scale: float = 1.0, span: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    raw = [scale * torch.randn(n, generator=generator, dtype=dtype) for n in (bins, bins, bins + 1)]
    return bin_sizes(raw[0], 1.0), bin_sizes(raw[1], span), knot_derivatives(raw[2])


def grid_with_knots(widths: torch.Tensor, points: int = 20001) -> torch.Tensor:
    knots = torch.cat([widths.new_zeros(1), torch.cumsum(widths, 0)])
    grid = torch.linspace(-0.3, 1.3, points, dtype=widths.dtype)
    # Grid points within 1e-6 of a knot go: a 1e-17 step would round to a tie, which says nothing.
    grid = grid[(grid[:, None] - knots).abs().min(1).values > 1e-6]
    return torch.cat([grid, knots]).sort().values  # every bin edge is a sample


@pytest.mark.parametrize("bins", [1, 3, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_splines_are_strictly_increasing_on_a_dense_grid_including_the_tails(bins, seed):
    widths, heights, derivatives = random_curve(seed, bins, span=2.5)
    y = rq_spline(grid_with_knots(widths), widths, heights, derivatives, left=0.0, bottom=-1.0)
    assert (y.diff() > 0).all()


@pytest.mark.parametrize("bins", [1, 3, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_inverse_recovers_inputs_at_every_bin_edge_and_in_the_tails_float64(bins, seed):
    widths, heights, derivatives = random_curve(seed, bins, span=2.5)
    x = grid_with_knots(widths)
    y = rq_spline(x, widths, heights, derivatives, left=0.0, bottom=-1.0)
    back = rq_spline_inverse(y, widths, heights, derivatives, left=0.0, bottom=-1.0)
    assert (back - x).abs().max() <= 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_inverse_is_exact_to_1e_5_in_float32(seed):
    # Moderate raw parameters keep every slope well above float32 rounding; a nearly flat piece maps
    # distinct x to one float, which no inverse can undo.
    widths, heights, derivatives = random_curve(seed, 16, torch.float32, scale=0.5)
    x = grid_with_knots(widths)
    y = rq_spline(x, widths, heights, derivatives)
    assert (rq_spline_inverse(y, widths, heights, derivatives) - x).abs().max() <= 1e-5


def test_equal_bins_and_unit_derivatives_give_the_identity():
    widths = heights = torch.full((8,), 1 / 8, dtype=torch.float64)
    derivatives = torch.ones(9, dtype=torch.float64)
    x = torch.linspace(-0.5, 1.5, 401, dtype=torch.float64)
    torch.testing.assert_close(rq_spline(x, widths, heights, derivatives), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(rq_spline_inverse(x, widths, heights, derivatives), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(ToneSpline(bins=8)(x), x, rtol=0, atol=1e-6)


def test_a_fresh_tone_spline_is_the_straight_line_between_its_ranges():
    spline = ToneSpline(bins=5, x_range=(0.0, 2.0), y_range=(0.25, 0.75))
    x = torch.linspace(0, 2, 101, dtype=torch.float64)
    torch.testing.assert_close(spline(x), 0.25 + x / 4, rtol=0, atol=1e-6)
    torch.testing.assert_close(spline.inverse(0.25 + x / 4), x, rtol=0, atol=1e-5)


def test_one_bin_matches_the_rational_quadratic_formula_by_hand():
    widths, heights = torch.tensor([1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    derivatives = torch.tensor([2.0, 0.5], dtype=torch.float64)
    # ξ = 1/2, s = 1: y = (s/4 + δ0/4) / (s + (δ0 + δ1 - 2s)/4) = 0.75 / 1.125.
    x = torch.tensor([0.5, -1.0, 3.0], dtype=torch.float64)
    expected = torch.tensor([0.75 / 1.125, -2.0, 1.0 + 0.5 * 2.0], dtype=torch.float64)
    torch.testing.assert_close(rq_spline(x, widths, heights, derivatives), expected)


def test_a_few_adam_steps_bend_the_spline_towards_a_curve_and_keep_it_invertible():
    spline = ToneSpline(bins=8)
    x = torch.linspace(0, 1, 256)
    target = x**2.2
    optimizer = torch.optim.Adam(spline.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        loss = (spline(x) - target).pow(2).mean()
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 20
    torch.testing.assert_close(spline.inverse(spline(x)), x, rtol=0, atol=1e-5)


def test_pq_matches_st_2084_at_known_points_and_round_trips():
    nits = torch.tensor([0.0, 100.0, 1000.0, 10000.0], dtype=torch.float64)
    code = pq_encode(nits)
    assert code[0].item() == pytest.approx(PQ_C1**PQ_M2, rel=1e-12)  # ≈ 7.3e-7, the small-signal floor
    assert code[0].item() == pytest.approx(7.3096e-7, rel=1e-4)
    assert code[1:].tolist() == pytest.approx([0.50808, 0.75183, 1.0], abs=5e-5)
    assert pq_encode(torch.tensor(20000.0)).item() == pytest.approx(1.0)
    sweep = torch.logspace(-3, 4, 200, dtype=torch.float64)
    torch.testing.assert_close(pq_decode(pq_encode(sweep)), sweep, rtol=1e-9, atol=0)
    assert pq_decode(torch.tensor(0.0, dtype=torch.float64)).item() == 0.0


def test_srgb_and_reinhard_round_trip_and_the_white_point_maps_to_one():
    v = torch.linspace(0, 1, 1001, dtype=torch.float64)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(v)), v)
    nits = torch.logspace(-3, 3, 200, dtype=torch.float64)
    torch.testing.assert_close(reinhard_inverse(reinhard(nits)), nits, rtol=1e-9, atol=0)
    assert reinhard(torch.tensor(1000.0, dtype=torch.float64)).item() == pytest.approx(1.0)
    scaled = 0.18 * nits / 30.0
    torch.testing.assert_close(reinhard(nits, white_nits=1e12), scaled / (1 + scaled))  # the basic operator


def test_relative_luminance_of_white_grey_and_primaries():
    image = torch.tensor([[[255, 255, 255], [255, 0, 0]], [[0, 255, 0], [0, 0, 255]]], dtype=torch.uint8)
    assert relative_luminance(image).flatten().tolist() == pytest.approx([1.0, 0.2126, 0.7152, 0.0722])


def assert_one_line_config_error(call, match: str):
    with pytest.raises(ConfigError, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)


def test_bad_input_is_a_one_line_config_error():
    assert_one_line_config_error(lambda: ToneSpline(bins=0), "bins must be an int >= 1")
    assert_one_line_config_error(lambda: ToneSpline(bins=2.5), "bins must be an int >= 1")
    assert_one_line_config_error(lambda: ToneSpline(bins=2000), "bins must be an int >= 1")
    assert_one_line_config_error(lambda: ToneSpline(x_range=(1.0, 0.0)), "must be increasing")
    ones = torch.ones(4)
    assert_one_line_config_error(lambda: rq_spline(ones, ones / 4, ones / 4, torch.ones(4)), r"\(K\+1,\)")
    assert_one_line_config_error(lambda: rq_spline_inverse(ones, ones[:0], ones[:0], ones[:1]), "K >= 1")
    assert_one_line_config_error(lambda: relative_luminance(torch.zeros(4, 4)), r"\(H, W, 3\)")
    assert_one_line_config_error(lambda: relative_luminance(torch.zeros(4, 4, 4)), r"\(H, W, 3\)")
