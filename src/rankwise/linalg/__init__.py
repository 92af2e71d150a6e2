"""Pure tensor math shared by every family; no nn.Module here."""

from .svd import LowRankFactors, randomized_svd, top_svd, truncated_svd

__all__ = ["LowRankFactors", "randomized_svd", "top_svd", "truncated_svd"]
