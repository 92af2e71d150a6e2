"""How well a model still does, for `rankwise compress`'s before/after report."""

from __future__ import annotations

import argparse

import torch


def is_causal_lm(model) -> bool:
    return hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None


@torch.no_grad()
def pooled_outputs(model, evaluation: torch.Tensor) -> torch.Tensor:
    """An encoder's mean-pooled last hidden states on the (n, length) token blocks."""
    return torch.cat([model(input_ids=evaluation[i: i + 4]).last_hidden_state.mean(1)
                      for i in range(0, len(evaluation), 4)])


def quality(model, tokenizer, evaluation: torch.Tensor, args: argparse.Namespace,
            original: torch.Tensor | None = None) -> dict:
    """A causal LM: {"perplexity", "exact_match"} on the held-out blocks and the bundled task. An encoder:
    {"output_cosine"}, the mean cosine of its pooled outputs to `original` (the uncompressed model's)."""
    from ..data import bundled_task
    from ..train.evaluate import exact_match, perplexity

    if not is_causal_lm(model):
        cosine = torch.nn.functional.cosine_similarity(pooled_outputs(model, evaluation), original, dim=-1)
        return {"output_cosine": cosine.mean().item()}
    _, test = bundled_task(args.task)
    matched = exact_match(model, tokenizer, list(test)[: args.eval_limit], progress=not args.no_progress)
    return {"perplexity": perplexity(model, evaluation, progress=not args.no_progress),
            "exact_match": matched["exact_match"]}
