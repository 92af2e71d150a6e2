"""Exact-match accuracy of greedy generations (the metric the bundled tasks and `make demo` report), and
held-out perplexity (what `rankwise compress` reports).

Normalisation: a prediction and its reference answer are compared after stripping leading and
trailing whitespace (str.strip), nothing more: case, inner spaces and punctuation all count, because
the bundled tasks are about producing an exact format.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import format_prompt
from ..errors import DataError


def normalize_answer(text: str) -> str:
    """The form in which predictions and answers are compared: surrounding whitespace removed."""
    return text.strip()


def _left_padded(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding, so every prompt ends at the last column and generation continues right after it."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_token_id] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 16,
                     progress: bool = True) -> list[str]:
    """Greedy completions (special tokens removed) of each raw prompt, formatted with the chat template.

    A model whose adapter attends over the sequence itself (LoRRA) generates each prompt alone (no left
    padding it cannot mask) and without a KV cache (it would see only the newest token), as it trained.
    """
    from ..adapters import needs_whole_sequence

    whole = needs_whole_sequence(model)
    batch_size = 1 if whole else batch_size
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    answers: list[str] = []
    try:
        bar = tqdm(total=len(prompts), desc="generating", unit="ex", disable=not progress)
        for start in range(0, len(prompts), batch_size):
            texts = [format_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
            rows = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
            ids, mask = _left_padded(rows, pad_id)
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                use_cache=not whole,
            )
            new_tokens = out[:, ids.shape[1]:]
            answers += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            bar.update(len(rows))
        bar.close()
    finally:
        model.train(was_training)
    return answers


def exact_match(model, tokenizer, examples: list[dict], max_new_tokens: int = 16, batch_size: int = 16,
                progress: bool = True) -> dict:
    """{"exact_match": share of examples whose greedy answer equals the reference, "predictions": [...]}.

    Answers are compared after normalize_answer (surrounding whitespace stripped). `max_new_tokens`
    must cover the longest reference answer, or long answers can never match.
    """
    if not examples:
        raise DataError("exact_match got no examples to evaluate.")
    predictions = generate_answers(
        model, tokenizer, [e["prompt"] for e in examples], max_new_tokens, batch_size, progress
    )
    hits = sum(normalize_answer(p) == normalize_answer(e["answer"]) for p, e in zip(predictions, examples))
    return {"exact_match": hits / len(examples), "predictions": predictions}


@torch.no_grad()
def perplexity(model, blocks: torch.Tensor, batch_size: int = 4, progress: bool = True) -> float:
    """exp(mean next-token negative log-likelihood) over every position of the (n, length) token `blocks`
    (the first token of each block is only context)."""
    total, count = 0.0, 0
    starts = range(0, len(blocks), batch_size)
    for start in tqdm(starts, desc="perplexity", leave=False, disable=not progress):
        ids = blocks[start: start + batch_size].to(next(model.parameters()).device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                 reduction="sum").item()
        count += ids[:, 1:].numel()
    return math.exp(total / count)
