"""LumaFlux's monotone rational-quadratic spline (RQS) tone decoder, on luminance.

Paper: Saini, Gedik, Birkbeck, Wang, Adsumilli, Bovik, "LumaFlux: ... SDR→HDR ..." (arXiv 2604.02787,
2026). A frozen Flux DiT gets zero-initialized adapters; after the VAE decoder an RQS maps SDR tone to HDR
(10-bit PQ / BT.2020) with K bins whose widths and heights come from a softmax and whose knot derivatives
come from a softplus, so the tone curve is monotone and invertible. The spline is the one of Durkan,
Bekasov, Murray, Papamakarios, "Neural Spline Flows" (NeurIPS 2019), after Gregory & Delbourgo (1982).

Forward, in bin k with knots (x_k, y_k), width w_k, height h_k, slope s_k = h_k / w_k, knot derivatives
δ_k, δ_{k+1} and ξ = (x - x_k) / w_k ∈ [0, 1]:

    y = y_k + h_k [s_k ξ² + δ_k ξ(1-ξ)] / [s_k + (δ_{k+1} + δ_k - 2 s_k) ξ(1-ξ)]

The denominator is s_k(1-2ξ(1-ξ)) + (δ_k + δ_{k+1}) ξ(1-ξ) > 0 and dy/dx > 0 whenever every s_k, δ_k > 0,
so the map is strictly increasing by construction, not by training. Inverse: with Δ = y - y_k and
c_k = δ_{k+1} + δ_k - 2 s_k, ξ solves a ξ² + b ξ + c = 0 with a = h_k(s_k - δ_k) + Δ c_k,
b = h_k δ_k - Δ c_k, c = -s_k Δ; the root in [0, 1] is ξ = 2c / (-b - √(b² - 4ac)) (the form without
cancellation). Outside the interval both maps continue as straight lines with the end-knot derivatives.

What trains: the 3K + 3 raw numbers of one global curve (K widths, K heights, K + 1 derivatives, the
output offset and span), not a network that predicts them. Scaled down from the paper: no DiT, no PGA/PCM/
coupler; luminance only (no chroma, no BT.2020 gamut); one curve for all pixels, where LumaFlux predicts
the spline from the network (per image or per pixel: unverified, the paper body could not be read); the
min bin size and min derivative (1e-3, Durkan's defaults) are ours. The application functions below build
a synthetic HDR/SDR pair from a real photo: PQ (SMPTE ST 2084), sRGB (IEC 61966-2-1) and Reinhard et al.'s
global operator ("Photographic Tone Reproduction for Digital Images", SIGGRAPH 2002).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

PQ_M1, PQ_M2 = 2610 / 16384, 2523 / 4096 * 128
PQ_C1, PQ_C2, PQ_C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
PQ_PEAK_NITS = 10000.0
LUMA_709 = (0.2126, 0.7152, 0.0722)


def _check_curve(widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor) -> None:
    if widths.ndim != 1 or widths.numel() == 0 or heights.shape != widths.shape \
            or derivatives.shape != (widths.numel() + 1,):
        raise ConfigError(f"a spline needs widths (K,), heights (K,), derivatives (K+1,) with K >= 1; got "
                          f"{tuple(widths.shape)}, {tuple(heights.shape)}, {tuple(derivatives.shape)}")


def _knots(sizes: torch.Tensor, start) -> torch.Tensor:
    return torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)]) + start


def _bin_of(values: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    # Interior knots only: a value on the last knot belongs to the last bin with ξ = 1.
    return torch.searchsorted(knots[1:-1].contiguous(), values.detach().contiguous(), right=True)


def rq_spline(x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor,
              left=0.0, bottom=0.0) -> torch.Tensor:
    """The monotone RQ spline through knots left + cumsum(widths), bottom + cumsum(heights); any x shape."""
    _check_curve(widths, heights, derivatives)
    xk, yk = _knots(widths, left), _knots(heights, bottom)
    k = _bin_of(x.clamp(xk[0], xk[-1]), xk)
    w, h, d0, d1 = widths[k], heights[k], derivatives[k], derivatives[k + 1]
    s = h / w
    xi = ((x - xk[k]) / w).clamp(0, 1)
    t = xi * (1 - xi)
    inside = yk[k] + h * (s * xi * xi + d0 * t) / (s + (d0 + d1 - 2 * s) * t)
    below = yk[0] + derivatives[0] * (x - xk[0])
    above = yk[-1] + derivatives[-1] * (x - xk[-1])
    return torch.where(x < xk[0], below, torch.where(x > xk[-1], above, inside))


def rq_spline_inverse(y: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor,
                      derivatives: torch.Tensor, left=0.0, bottom=0.0) -> torch.Tensor:
    """The closed-form inverse of rq_spline with the same parameters."""
    _check_curve(widths, heights, derivatives)
    xk, yk = _knots(widths, left), _knots(heights, bottom)
    k = _bin_of(y.clamp(yk[0], yk[-1]), yk)
    w, h, d0, d1 = widths[k], heights[k], derivatives[k], derivatives[k + 1]
    s = h / w
    rise = y.clamp(yk[0], yk[-1]) - yk[k]
    bend = d0 + d1 - 2 * s
    a = h * (s - d0) + rise * bend
    b = h * d0 - rise * bend
    c = -s * rise
    xi = (2 * c / (-b - torch.sqrt((b * b - 4 * a * c).clamp_min(0)))).clamp(0, 1)
    inside = xk[k] + xi * w
    below = xk[0] + (y - yk[0]) / derivatives[0]
    above = xk[-1] + (y - yk[-1]) / derivatives[-1]
    return torch.where(y < yk[0], below, torch.where(y > yk[-1], above, inside))


def bin_sizes(raw: torch.Tensor, total, minimum: float = 1e-3) -> torch.Tensor:
    """Softmax sizes with a floor, summing to total: total (m + (1 - K m) softmax(raw))."""
    return total * (minimum + (1 - minimum * raw.shape[-1]) * torch.softmax(raw, -1))


def knot_derivatives(raw: torch.Tensor, minimum: float = 1e-3) -> torch.Tensor:
    return minimum + F.softplus(raw)


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


class ToneSpline(nn.Module):
    """One learnable RQ tone curve on a fixed input interval; the output offset and span also train.

    At init the curve is the straight line from (x_range[0], y_range[0]) to (x_range[1], y_range[1]):
    equal bins and every knot derivative equal to that line's slope."""

    def __init__(self, bins: int = 16, x_range=(0.0, 1.0), y_range=(0.0, 1.0), min_size: float = 1e-3,
                 min_derivative: float = 1e-3):
        super().__init__()
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1 or bins * min_size >= 1:
            raise ConfigError(f"bins must be an int >= 1 with bins * min_size < 1, got {bins!r}; use e.g. 16")
        if not (x_range[1] > x_range[0] and y_range[1] > y_range[0]):
            raise ConfigError(f"x_range and y_range must be increasing (low, high), got {x_range}, {y_range}")
        slope = (y_range[1] - y_range[0]) / (x_range[1] - x_range[0])
        if slope <= min_derivative:
            raise ConfigError(f"the initial slope {slope:g} must exceed min_derivative {min_derivative:g}")
        self.x_range = (float(x_range[0]), float(x_range[1]))
        self.min_size, self.min_derivative = min_size, min_derivative
        self.raw_widths = nn.Parameter(torch.zeros(bins))
        self.raw_heights = nn.Parameter(torch.zeros(bins))
        raw_slope = _inverse_softplus(slope - min_derivative)
        self.raw_derivatives = nn.Parameter(torch.full((bins + 1,), raw_slope))
        self.bottom = nn.Parameter(torch.tensor(float(y_range[0])))
        self.raw_span = nn.Parameter(torch.tensor(_inverse_softplus(y_range[1] - y_range[0])))

    def curve(self, dtype: torch.dtype = torch.float32) -> tuple:
        """(widths, heights, derivatives, left, bottom) for rq_spline, computed in dtype."""
        left, right = self.x_range
        heights = bin_sizes(self.raw_heights.to(dtype), F.softplus(self.raw_span.to(dtype)), self.min_size)
        return (bin_sizes(self.raw_widths.to(dtype), right - left, self.min_size), heights,
                knot_derivatives(self.raw_derivatives.to(dtype), self.min_derivative), left,
                self.bottom.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rq_spline(x, *self.curve(x.dtype))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return rq_spline_inverse(y, *self.curve(y.dtype))


def pq_encode(nits: torch.Tensor) -> torch.Tensor:
    """SMPTE ST 2084 inverse EOTF: absolute luminance in cd/m² (clamped to [0, 10000]) → PQ code in [0, 1]."""
    y = (nits / PQ_PEAK_NITS).clamp(0, 1) ** PQ_M1
    return ((PQ_C1 + PQ_C2 * y) / (1 + PQ_C3 * y)) ** PQ_M2


def pq_decode(code: torch.Tensor) -> torch.Tensor:
    """SMPTE ST 2084 EOTF: PQ code (clamped to [0, 1]) → cd/m²."""
    p = code.clamp(0, 1) ** (1 / PQ_M2)
    return PQ_PEAK_NITS * ((p - PQ_C1).clamp_min(0) / (PQ_C2 - PQ_C3 * p)) ** (1 / PQ_M1)


def srgb_to_linear(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v <= 0.04045, v / 12.92, ((v.clamp_min(0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: torch.Tensor) -> torch.Tensor:
    v = v.clamp(0, 1)
    return torch.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


def relative_luminance(image) -> torch.Tensor:
    """Linear BT.709 luminance Y ∈ [0, 1] of an sRGB image (H, W, 3), uint8 or floats in [0, 1]."""
    image = image if torch.is_tensor(image) else torch.tensor(image)  # copies: photos may be read-only
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ConfigError(f"expected an sRGB image of shape (H, W, 3), got {tuple(image.shape)}")
    values = image.double() / 255 if image.dtype == torch.uint8 else image.double()
    return srgb_to_linear(values) @ torch.tensor(LUMA_709, dtype=torch.float64)


def reinhard(nits: torch.Tensor, key: float = 0.18, adaptation_nits: float = 30.0,
             white_nits: float = 1000.0) -> torch.Tensor:
    """Reinhard et al.'s global operator: L_m = key L / L_a, L_d = L_m (1 + L_m / L_white²) / (1 + L_m).

    L_a is a fixed adaptation luminance, not the image's log-average, so that one curve is the exact
    inverse for every image; white_nits maps to display 1."""
    scaled, white = key * nits / adaptation_nits, key * white_nits / adaptation_nits
    return scaled * (1 + scaled / white**2) / (1 + scaled)


def reinhard_inverse(display: torch.Tensor, key: float = 0.18, adaptation_nits: float = 30.0,
                     white_nits: float = 1000.0) -> torch.Tensor:
    """The positive root of L_m²/L_white² + (1 - L_d) L_m - L_d = 0, back in cd/m²."""
    white2 = (key * white_nits / adaptation_nits) ** 2
    gap = 1 - display
    scaled = 2 * display / (torch.sqrt(gap * gap + 4 * display / white2) + gap)  # no cancellation at L_d≈0
    return scaled * adaptation_nits / key
