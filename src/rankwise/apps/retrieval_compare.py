"""One retrieval comparison on a (train, test) pair split: BM25, a frozen encoder, ADR on it (queries only
or both sides), and a rankwise LoRA of the encoder with about as many trained numbers. `rankwise retrieve`
and bench/retrieval_adr.py both run it.

The LoRA is trained on the same pairs with in-batch negatives (InfoNCE at temperature 0.05, AdamW 2e-4,
batch 32): every other document of the batch is a negative, as in sentence-embedding fine-tuning.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .retrieval import adapted_scores, bm25_scores, embed_texts, mean_pooled, retrieval_metrics, train_adr

METHODS = ("bm25", "dense", "adr", "adr-both", "lora")


def train_lora_encoder(model: nn.Module, tokenizer, pairs: list[dict], steps: int, *, rank: int = 2,
                       targets: tuple[str, ...] = ("query", "value"), batch_size: int = 32,
                       max_length: int = 128, seed: int = 0, dev: list[dict] | None = None,
                       checks: int = 5) -> int:
    """Attach a rankwise LoRA to the encoder and train it contrastively in place; returns its trained
    numbers. With `dev` pairs, dev recall@10 is measured at step 0 and `checks` times during training,
    and the best of those adapters is kept (as train_adr does per epoch)."""
    import rankwise

    rankwise.adapt(model, "lora", rank=rank, alpha=2.0 * rank, targets=list(targets))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    generator = torch.Generator().manual_seed(seed)
    check_at = {round(steps * k / checks) for k in range(checks + 1)} if dev else set()
    best, best_state = -1.0, None

    def encode(texts: list[str]) -> torch.Tensor:
        return mean_pooled(model, tokenizer, texts, max_length)

    for step in range(steps + 1):
        if step in check_at:
            dev_q = embed_texts(model, tokenizer, [p["query"] for p in dev], max_length=max_length)
            dev_d = embed_texts(model, tokenizer, [p["document"] for p in dev], max_length=max_length)
            recall = retrieval_metrics(dev_q @ dev_d.T, torch.arange(len(dev)))["recall@10"]
            if recall > best:
                best, best_state = recall, [p.detach().clone() for p in params]
        if step == steps:
            break
        model.train()
        batch = [pairs[i] for i in torch.randperm(len(pairs), generator=generator)[:batch_size].tolist()]
        scores = encode([p["query"] for p in batch]) @ encode([p["document"] for p in batch]).T
        loss = F.cross_entropy(scores / 0.05, torch.arange(len(batch)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if best_state is not None:
        with torch.no_grad():
            for param, kept in zip(params, best_state, strict=True):
                param.copy_(kept)
    model.eval()
    return sum(p.numel() for p in params)


def compare_retrieval(train: list[dict], test: list[dict], methods: tuple[str, ...] = METHODS, *,
                      encoder: str = "minilm-l6", lora_steps: int = 150, adr_epochs: int = 20,
                      max_length: int = 128, dev: list[dict] | None = None) -> dict[str, dict[str, Any]]:
    """{method: recall@1/5/10, nDCG@10 and trained numbers} of each test query ranked against every
    test document. ADR's slots are chosen so it trains as many numbers as the rank-2 LoRA on query and
    value (2·h·d per side). With `dev` pairs, ADR and the LoRA each keep their best point by dev
    recall@10 (ADR per epoch, the LoRA at 6 evenly spaced steps, both counting the untrained start)."""
    from ..models import load

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"unknown retrieval method(s) {unknown}; use some of {', '.join(METHODS)}.")
    needs_training = {"adr", "adr-both", "lora"} & set(methods)
    if needs_training and not train:
        raise ConfigError(f"{', '.join(sorted(needs_training))} need training pairs; the train split is "
                          "empty.")
    queries, documents = [p["query"] for p in test], [p["document"] for p in test]
    gold, results = torch.arange(len(test)), {}
    if "bm25" in methods:
        results["bm25"] = {**retrieval_metrics(bm25_scores(queries, documents), gold), "trained": 0}
    model, tokenizer = load(encoder)
    lora_numbers = sum(2 * 2 * m.in_features for name, m in model.named_modules()
                       if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in ("query", "value"))
    if {"dense", "adr", "adr-both"} & set(methods):
        test_q = embed_texts(model, tokenizer, queries, max_length=max_length)
        test_d = embed_texts(model, tokenizer, documents, max_length=max_length)
        if "dense" in methods:
            results["dense"] = {**retrieval_metrics(test_q @ test_d.T, gold), "trained": 0}
        if {"adr", "adr-both"} & set(methods):
            train_q = embed_texts(model, tokenizer, [p["query"] for p in train], max_length=max_length)
            train_d = embed_texts(model, tokenizer, [p["document"] for p in train], max_length=max_length)
            dev_embeddings = None if not dev else (
                embed_texts(model, tokenizer, [p["query"] for p in dev], max_length=max_length),
                embed_texts(model, tokenizer, [p["document"] for p in dev], max_length=max_length),
                torch.arange(len(dev)))
        for name, both in (("adr", False), ("adr-both", True)):
            if name not in methods:
                continue
            slots = max(1, lora_numbers // (2 * test_q.shape[1] * (2 if both else 1)))
            adapters = train_adr(train_q, train_d, torch.arange(len(train)), slots=slots, both_sides=both,
                                 epochs=adr_epochs, dev=dev_embeddings)
            with torch.no_grad():
                scores = adapted_scores(test_q, test_d, *adapters)
            trained = sum(p.numel() for a in adapters if a is not None for p in a.parameters())
            results[name] = {**retrieval_metrics(scores, gold), "trained": trained}
    if "lora" in methods:
        trained = train_lora_encoder(model, tokenizer, train, lora_steps, max_length=max_length, dev=dev)
        tuned_q = embed_texts(model, tokenizer, queries, max_length=max_length)
        tuned_d = embed_texts(model, tokenizer, documents, max_length=max_length)
        results["lora"] = {**retrieval_metrics(tuned_q @ tuned_d.T, gold), "trained": trained}
    return results
