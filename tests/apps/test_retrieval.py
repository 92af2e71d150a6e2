"""Retrieval metrics, BM25 and dense first stages, and ADR's embedding adapter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rankwise.apps.retrieval import (
    EmbeddingAdapter,
    adapted_scores,
    bm25_scores,
    embed_texts,
    gold_ranks,
    ndcg_at,
    recall_at,
    retrieval_metrics,
    train_adr,
)
from rankwise.errors import DataError


def test_ranks_recall_and_ndcg_against_hand_computed_values():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.5, 0.5, 0.9]])
    ranks = gold_ranks(scores, torch.tensor([0, 0, 1]))
    assert ranks.tolist() == [0, 1, 2]  # the third query's gold ties with another: the tie counts against it
    assert recall_at(ranks, 1) == pytest.approx(1 / 3) and recall_at(ranks, 2) == pytest.approx(2 / 3)
    assert ndcg_at(ranks, 10) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 3)
    assert ndcg_at(ranks, 2) == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert set(retrieval_metrics(scores, torch.tensor([0, 0, 1]))) == {"recall@1", "recall@5", "recall@10",
                                                                         "ndcg@10"}


def test_bm25_finds_the_document_sharing_the_query_words():
    documents = ["def load_path(path):\n    return open(path).read()",
                 "def count_words(text): return len(text)", "class Heap: pass"]
    scores = bm25_scores(["read the file at a path", "count the words of a text"], documents)
    assert scores.shape == (2, 3) and scores.argmax(1).tolist() == [0, 1]
    with pytest.raises(DataError, match="the queries are empty"):
        bm25_scores([], documents)
    with pytest.raises(DataError, match="the documents are empty"):
        bm25_scores(["x"], ["  "])


def test_the_embedding_adapter_is_the_identity_at_init_and_a_residual_of_rank_at_most_its_slots():
    adapter = EmbeddingAdapter(32, slots=4)
    e = torch.randn(10, 32)
    assert torch.equal(adapter(e), e)
    with torch.no_grad():
        adapter.values.normal_()
    residual = adapter(e) - e
    assert torch.linalg.matrix_rank(residual) <= 4
    weights = (e @ adapter.keys.T).softmax(-1)
    torch.testing.assert_close(residual, weights @ adapter.values)


def test_adr_learns_a_hidden_mapping_between_queries_and_documents():
    """Queries are the documents seen through a fixed rotation: raw cosine fails, ADR recovers the pairs."""
    generator = torch.Generator().manual_seed(0)
    documents = F.normalize(torch.randn(64, 16, generator=generator), dim=-1)
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=generator))[0]
    queries = F.normalize(documents @ rotation + 0.05 * torch.randn(64, 16, generator=generator), dim=-1)
    gold = torch.arange(64)
    before = retrieval_metrics(queries @ documents.T, gold)["recall@1"]
    query_adapter, document_adapter = train_adr(queries, documents, gold, slots=32, epochs=60, batch_size=16,
                                                both_sides=True)
    with torch.no_grad():
        after = retrieval_metrics(adapted_scores(queries, documents, query_adapter, document_adapter),
                                  gold)["recall@1"]
    assert before < 0.3 and after > before + 0.3


def test_adr_keeps_the_epoch_with_the_best_dev_recall():
    """Training pairs are rotated, dev pairs are not: training helps the train split and hurts dev, so
    the kept adapters are the best point of the dev history (here the identity, epoch 0)."""
    generator = torch.Generator().manual_seed(0)
    documents = F.normalize(torch.randn(64, 16, generator=generator), dim=-1)
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=generator))[0]
    queries = F.normalize(documents @ rotation, dim=-1)
    dev_documents = F.normalize(torch.randn(256, 16, generator=generator), dim=-1)
    dev = (dev_documents + 0.2 * torch.randn(256, 16, generator=generator), dev_documents, torch.arange(256))
    history: list[float] = []
    query_adapter, _ = train_adr(queries, documents, torch.arange(64), slots=32, epochs=20, batch_size=16,
                                 dev=dev, history=history)
    assert len(history) == 21 and history[0] == max(history) > min(history)
    with torch.no_grad():
        kept = retrieval_metrics(adapted_scores(dev[0], dev[1], query_adapter), dev[2])["recall@10"]
    assert kept == max(history)


def test_mean_pooled_embeddings_ignore_padding(tiny_bert_and_tokenizer):
    model, tokenizer = tiny_bert_and_tokenizer
    alone = embed_texts(model, tokenizer, ["a short text"])
    padded = embed_texts(model, tokenizer, ["a short text", "a much longer text that pads the first one"])
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.norm(dim=-1), torch.ones(2))
    with pytest.raises(DataError, match="the texts are empty"):
        embed_texts(model, tokenizer, [])


@pytest.fixture
def tiny_bert_and_tokenizer():
    from transformers import BertConfig, BertModel

    from rankwise.models import load

    _, tokenizer = load("tiny-llama")  # any tokenizer with a pad token serves a random encoder
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64)).eval()
    return model, tokenizer
