"""Pure tensor math shared by every family; no nn.Module here."""

from .compensation import eigen_compensation
from .quantize import (
                       SUPPORTED_BITS,
                       binarize,
                       magnitude_mask,
                       pack_bits,
                       rtn_dequantize,
                       rtn_quantize,
                       unpack_bits,
)
from .svd import LowRankFactors, randomized_svd, svd_factors, top_svd, truncated_svd

__all__ = [
    "SUPPORTED_BITS", "LowRankFactors", "binarize", "eigen_compensation", "magnitude_mask", "pack_bits",
    "randomized_svd", "rtn_dequantize", "rtn_quantize", "svd_factors", "top_svd", "truncated_svd",
    "unpack_bits",
]
