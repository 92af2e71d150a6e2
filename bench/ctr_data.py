"""Synthetic click-through data and a small CTR model (one embedding table per field + an MLP), for the
compression benchmarks (bench/compress_afm.py). Bench-only: rankwise's API does not need a CTR model.

The data: 8 categorical fields of 50-200 categories each, drawn with Zipf-like popularity (as real ad
logs are: a few values dominate), and clicks from a fixed random "true" model with pairwise interactions,
a factorization machine:
    logit = b + Σ_f w_f[c_f] + Σ_{f<g} <v_f[c_f], v_g[c_g]>,    click ~ Bernoulli(σ(logit))
with b putting 20% of rows at a positive logit (a click rate near 28%). Everything is seeded, so each
call returns the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FIELD_SIZES = (50, 80, 100, 120, 150, 200, 60, 90)


@dataclass
class ClickData:
    ids: torch.Tensor  # (rows, fields) category index per field
    clicks: torch.Tensor  # (rows,) 0. or 1.
    true_logits: torch.Tensor  # (rows,) the generating model's logit, for the oracle's AUC

    def split(self, fractions: tuple[float, ...]) -> list[ClickData]:
        """Consecutive splits (the rows are already in random order)."""
        edges = torch.tensor((0.0, *fractions)).cumsum(0).mul(len(self.clicks)).round().long().tolist()
        return [ClickData(self.ids[a:b], self.clicks[a:b], self.true_logits[a:b])
                for a, b in zip(edges[:-1], edges[1:], strict=True)]


def make_click_data(rows: int = 40_000, sizes: tuple[int, ...] = FIELD_SIZES, latent: int = 4,
                    seed: int = 0) -> ClickData:
    generator = torch.Generator().manual_seed(seed)
    columns, first_order, factors = [], [], []
    for size in sizes:
        popularity = 1.0 / torch.arange(1, size + 1).double() ** 1.1
        popularity = popularity[torch.randperm(size, generator=generator)]  # popular ids anywhere
        columns.append(torch.multinomial(popularity, rows, replacement=True, generator=generator))
        first_order.append(0.4 * torch.randn(size, generator=generator, dtype=torch.float64))
        factors.append(0.35 * torch.randn(size, latent, generator=generator, dtype=torch.float64))
    ids = torch.stack(columns, 1)
    linear = sum(w[ids[:, f]] for f, w in enumerate(first_order))
    looked_up = torch.stack([v[ids[:, f]] for f, v in enumerate(factors)], 1)  # (rows, fields, latent)
    pairwise = 0.5 * (looked_up.sum(1).square().sum(1) - looked_up.square().sum((1, 2)))  # Σ_{f<g} <v_f, v_g>
    logits = linear + pairwise
    logits = logits - torch.quantile(logits, 0.8)  # b: about 20% of rows above zero, a ~20% click rate
    clicks = torch.bernoulli(torch.sigmoid(logits), generator=generator)
    return ClickData(ids, clicks.float(), logits.float())


class EmbeddingMLP(nn.Module):
    """Concatenated per-field embeddings -> Linear/ReLU hidden layers -> one logit."""

    def __init__(self, sizes: tuple[int, ...] = FIELD_SIZES, dim: int = 16,
                 hidden: tuple[int, ...] = (256, 128, 64), seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embeddings = nn.ModuleList(nn.Embedding(size, dim) for size in sizes)
        for embedding in self.embeddings:
            nn.init.normal_(embedding.weight, std=0.05)
        layers, width = [], dim * len(sizes)
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def hidden_layer_names(self) -> list[str]:
        """The hidden Linear layers (the logit head excluded), as module paths."""
        linears = [f"mlp.{i}" for i, m in enumerate(self.mlp) if isinstance(m, nn.Linear)]
        return linears[:-1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        features = torch.cat([table(ids[:, f]) for f, table in enumerate(self.embeddings)], -1)
        return self.mlp(features).squeeze(-1)
