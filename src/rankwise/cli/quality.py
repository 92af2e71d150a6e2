"""How well a model still does, for `rankwise compress`'s before/after report."""

from __future__ import annotations

import argparse

import torch


def quality(model, tokenizer, evaluation: torch.Tensor, args: argparse.Namespace,
            reference: dict | None = None) -> dict:
    """A causal LM: {"perplexity", "exact_match"} on the held-out blocks and the bundled task. An encoder:
    {"output_cosine"}, the mean cosine of its mean-pooled outputs to `reference`'s (1.0 before)."""
    from ..data import bundled_task
    from ..train.evaluate import exact_match, perplexity

    if hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
        _, test = bundled_task(args.task)
        matched = exact_match(model, tokenizer, list(test)[: args.eval_limit], progress=not args.no_progress)
        return {"perplexity": perplexity(model, evaluation, progress=not args.no_progress),
                "exact_match": matched["exact_match"]}
    with torch.no_grad():
        pooled = torch.cat([model(input_ids=evaluation[i: i + 4]).last_hidden_state.mean(1)
                            for i in range(0, len(evaluation), 4)])
    if reference is None:
        return {"output_cosine": 1.0, "_pooled": pooled}
    cosine = torch.nn.functional.cosine_similarity(pooled, reference["_pooled"], dim=-1).mean().item()
    return {"output_cosine": cosine}
