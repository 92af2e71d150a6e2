"""Per-task evaluation of a merge: on each input's task, the merged model's exact match beside the input's
own (its expert's), and on held-out text the perplexity of the base, each expert and the merge, which
shows what merging forgets of the base model's general ability.

The held-out text is the bundled corpus' evaluation split (rankwise.data.text), never seen in training.
For RMM the "merged" model of task i is the adapter reverted from the basis for input i.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def exact_match_on(model, tokenizer, task: str, limit: int, progress: bool) -> float:
    from ..data import bundled_task
    from ..train.evaluate import exact_match

    _, test = bundled_task(task)
    return exact_match(model, tokenizer, list(test)[:limit], progress=progress)["exact_match"]


def held_out_blocks(tokenizer, count: int = 16, length: int = 128) -> torch.Tensor:
    from ..data.text import corpus_text, token_blocks

    return token_blocks(tokenizer, corpus_text("evaluation"), length, count, source="the bundled corpus")


def score_experts(load_expert: Callable[[int], torch.nn.Module], tokenizer, tasks: list[str], limit: int = 50,
                  progress: bool = True) -> list[dict]:
    """[{"exact_match", "perplexity"}] of each input on its own task and on the held-out text."""
    from ..train.evaluate import perplexity

    blocks, scores = held_out_blocks(tokenizer), []
    for index, task in enumerate(tasks):
        expert = load_expert(index)
        scores.append({"exact_match": exact_match_on(expert, tokenizer, task, limit, progress),
                       "perplexity": perplexity(expert, blocks, progress=False)})
    return scores


def evaluate_merge(experts: list[dict], merged_for: Callable[[int], torch.nn.Module], base: torch.nn.Module,
                   tokenizer, tasks: list[str], limit: int = 50, progress: bool = True) -> dict:
    """{"tasks": [{task, expert, merged, ratio}], "perplexity": {"base", "experts", "merged"}}.

    `experts` is score_experts' output; merged_for(i) gives the model to score on input i's task (it may
    return the same model for every i)."""
    from ..train.evaluate import perplexity

    blocks = held_out_blocks(tokenizer)
    rows, merged_ppl, scored = [], [], set()
    expert_ppl = [e["perplexity"] for e in experts]
    for index, task in enumerate(tasks):
        expert_score = experts[index]["exact_match"]
        merged = merged_for(index)
        merged_score = exact_match_on(merged, tokenizer, task, limit, progress)
        if id(merged) not in scored:  # one merged model for every task, or RMM's one per task
            scored.add(id(merged))
            merged_ppl.append(perplexity(merged, blocks, progress=False))
        rows.append({"task": task, "expert": expert_score, "merged": merged_score,
                     "ratio": merged_score / expert_score if expert_score else None})
    return {"tasks": rows, "perplexity": {"base": perplexity(base, blocks, progress=False),
                                          "experts": expert_ppl, "merged": merged_ppl}}
