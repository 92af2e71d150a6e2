"""Dense and sparse first-stage retrieval, and Adapted Dense Retrieval: a low-rank residual on frozen
embeddings ("Augmented Embeddings for Custom Retrievals", Khatry, Bajpai, Gupta, Gulwani, Tiwari,
Microsoft, arXiv 2310.05380).

ADR treats the encoder as a black box and learns only a transform of its output vectors:

    Tr(e) = e + softmax(e Kᵀ) V,        K, V ∈ R^{h×d}, h ≪ d

a key–value memory of h slots: the residual is a convex mix of h learned directions, so it has rank ≤ h.
V starts at zero, so Tr is the identity at init. Scores are cosines sim(Tr_q(q), Tr_c(c)); the
transform goes on the queries only (the corpus index never changes) or, for heterogeneous pairs such as
NL→code, on both sides with separate K, V. Training: softmax cross-entropy of each query against its gold
document among all the training corpus's documents (the others are the negatives), with Adam.
Trains: K and V (2·h·d numbers per side); the encoder is frozen and run once.
Where the paper is unclear (no code is public; see the notes), we follow its patent's wording and our
notes: the softmax memory form, V = 0 at init, a corpus-wide softmax; no temperature on the keys.

First stages: BM25 through `bm25s`, with identifiers split at underscores (load_path → load path), and
MiniLM sentence embeddings (mean of the last hidden states over real tokens, L2-normalised, as
all-MiniLM-L6-v2 is used). Metrics for one gold document per query: recall@k and nDCG@k.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError


def gold_ranks(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """0-based rank of each query's gold document in its row of `scores` (queries × documents); ties
    count against the gold document."""
    gold_score = scores.gather(1, gold[:, None])
    return (scores >= gold_score).sum(dim=1) - 1


def recall_at(ranks: torch.Tensor, k: int) -> float:
    return (ranks < k).float().mean().item()


def ndcg_at(ranks: torch.Tensor, k: int) -> float:
    """nDCG@k with one relevant document: 1 / log2(rank + 2) when it is in the top k, else 0."""
    gains = torch.where(ranks < k, 1.0 / torch.log2(ranks.float() + 2), torch.zeros(()))
    return gains.mean().item()


def retrieval_metrics(scores: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    ranks = gold_ranks(scores, gold)
    return {"recall@1": recall_at(ranks, 1), "recall@5": recall_at(ranks, 5),
            "recall@10": recall_at(ranks, 10), "ndcg@10": ndcg_at(ranks, 10)}


def _check_texts(texts: list[str], what: str) -> None:
    if not texts or not any(t.strip() for t in texts):
        raise DataError(f"the {what} are empty; give at least one non-empty text.")


def bm25_scores(queries: list[str], documents: list[str]) -> torch.Tensor:
    """(queries × documents) BM25 scores (bm25s, its default k1 = 1.5, b = 0.75, English stopwords)."""
    import bm25s

    _check_texts(queries, "queries")
    _check_texts(documents, "documents")

    def tokens(texts):
        return bm25s.tokenize([t.replace("_", " ") for t in texts], stopwords="en", show_progress=False)

    index = bm25s.BM25()
    index.index(tokens(documents), show_progress=False)
    ids, scores = index.retrieve(tokens(queries), k=len(documents), show_progress=False)
    out = torch.zeros(len(queries), len(documents))
    out.scatter_(1, torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(scores, dtype=torch.float32))
    return out


def mean_pooled(model: nn.Module, tokenizer, texts: list[str], max_length: int = 128) -> torch.Tensor:
    """One batch's L2-normalised mean of the last hidden states over real tokens (gradients flow)."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)


@torch.no_grad()
def embed_texts(model: nn.Module, tokenizer, texts: list[str], batch_size: int = 32,
                max_length: int = 128) -> torch.Tensor:
    """mean_pooled sentence embeddings (n, d) of `texts`, in eval mode and batches."""
    _check_texts(texts, "texts")
    was_training = model.training
    model.eval()
    rows = []
    try:
        for start in range(0, len(texts), batch_size):
            rows.append(mean_pooled(model, tokenizer, texts[start:start + batch_size], max_length))
    finally:
        model.train(was_training)
    return torch.cat(rows)


class EmbeddingAdapter(nn.Module):
    """Tr(e) = e + softmax(e Kᵀ) V: ADR's low-rank residual on frozen embeddings (identity at init)."""

    def __init__(self, dim: int, slots: int = 16, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.keys = nn.Parameter(torch.randn(slots, dim, generator=generator) / math.sqrt(dim))
        self.values = nn.Parameter(torch.zeros(slots, dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings + (embeddings @ self.keys.T).softmax(dim=-1) @ self.values


def adapted_scores(queries: torch.Tensor, documents: torch.Tensor, query_adapter: nn.Module,
                   document_adapter: nn.Module | None = None) -> torch.Tensor:
    """Cosine scores of the transformed queries against the (optionally transformed) documents."""
    docs = documents if document_adapter is None else document_adapter(documents)
    return F.normalize(query_adapter(queries), dim=-1) @ F.normalize(docs, dim=-1).T


def train_adr(queries: torch.Tensor, documents: torch.Tensor, gold: torch.Tensor, *, slots: int = 16,
              both_sides: bool = False, epochs: int = 20, batch_size: int = 64, lr: float = 1e-2,
              temperature: float = 0.05, seed: int = 0, dev: tuple | None = None,
              history: list | None = None) -> tuple[EmbeddingAdapter, EmbeddingAdapter | None]:
    """Fit ADR on training pairs: query i's gold document is documents[gold[i]]; every other document
    is a negative. Returns (query adapter, document adapter or None).

    With `dev` = (queries, documents, gold) embeddings of held-out pairs, the adapters of the epoch with
    the best dev recall@10 are kept, epoch 0 (the identity, i.e. the frozen encoder) included; each
    epoch's dev recall@10 is appended to `history`."""
    dim = queries.shape[1]
    query_adapter = EmbeddingAdapter(dim, slots, seed)
    document_adapter = EmbeddingAdapter(dim, slots, seed + 1) if both_sides else None
    adapters = nn.ModuleList([query_adapter] + ([document_adapter] if both_sides else []))
    optimizer = torch.optim.Adam(adapters.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    best, best_state = -1.0, None
    for epoch in range(epochs + 1):
        if epoch:
            for batch in torch.randperm(len(queries), generator=generator).split(batch_size):
                scores = adapted_scores(queries[batch], documents, query_adapter, document_adapter)
                loss = F.cross_entropy(scores / temperature, gold[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        if dev is not None:
            with torch.no_grad():
                recall = retrieval_metrics(adapted_scores(dev[0], dev[1], query_adapter, document_adapter),
                                           dev[2])["recall@10"]
            if history is not None:
                history.append(recall)
            if recall > best:
                best, best_state = recall, copy.deepcopy(adapters.state_dict())
    if best_state is not None:
        adapters.load_state_dict(best_state)
    return query_adapter.eval(), None if document_adapter is None else document_adapter.eval()
