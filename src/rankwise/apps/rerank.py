"""Rank-R1's setwise reranker: the prompt, the 0/1 reward and the setwise heapsort (Zhuang, Ma, Koopman,
Lin, Zuccon, "Rank-R1: Enhancing Reasoning in LLM-based Document Rerankers via Reinforcement Learning",
SIGIR 2026; code: ielab/llm-rankers, Rank-R1/).

The model sees one query and n candidate documents labelled [1]..[n], reasons inside <think>…</think> and
answers the label of the most relevant one inside <answer>…</answer>. The GRPO reward is

    r = 1  if the completion matches <think>.*?</think>\\s*<answer>(.*?)</answer> (dot matches newlines)
           and the stripped answer equals the gold label, e.g. "[3]";
    r = 0  otherwise (a format failure scores 0 too).

Training sets put the positive among n − 1 negatives at a seeded random position (the paper: 1 + 19 from
MS MARCO). Inference reranks a first stage's top candidates with a setwise heapsort: a heap whose nodes
have `set_size − 1` children, where each heapify step asks the model for the best of a node and its
children (one set of at most `set_size` documents), then pops the top k. An answer that names no
candidate keeps the parent in place, as the released ranker does.
Trains: a LoRA on the policy, through TRL's GRPOTrainer (the training run is not built yet; this module
is the part every run shares).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from ..errors import ConfigError, DataError

SYSTEM_PROMPT = ("A conversation between User and Assistant. The user asks which of several documents "
                 "best answers a query. The Assistant first thinks about the reasoning process in its mind "
                 "and then gives the answer. The reasoning process is enclosed within <think> </think> and "
                 "the answer within <answer> </answer> tags, i.e., <think> reasoning here </think> "
                 "<answer> [label] </answer>.")
_COMPLETION = re.compile(r"<think>.*?</think>\s*<answer>(.*?)</answer>", re.DOTALL)
_LABEL = re.compile(r"\[(\d+)\]")


def label(position: int) -> str:
    """The label of the 0-based `position`: "[1]", "[2]", ..."""
    return f"[{position + 1}]"


def setwise_messages(query: str, documents: Sequence[str], max_document_chars: int = 1000) -> list[dict]:
    """The chat messages of one setwise comparison (system + user); documents are cut to the given length."""
    if not query.strip():
        raise DataError("the query is empty; a comparison needs a query.")
    if len(documents) < 2:
        raise ConfigError(f"a setwise comparison needs at least 2 documents, got {len(documents)}.")
    listed = "\n".join(f"{label(i)} {' '.join(doc.split())[:max_document_chars]}"
                       for i, doc in enumerate(documents))
    user = (f'Given the query: "{query}", which of the following documents is most relevant?\n{listed}\n'
            "After completing the reasoning process, please provide only the label of the most relevant "
            "document to the query, enclosed in square brackets, within the answer tags. For example, if "
            "the third document is the most relevant, the answer should be: <think> reasoning process here "
            "</think> <answer>[3]</answer>.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def shuffled_candidates(positive: str, negatives: Sequence[str], seed: int) -> tuple[list[str], str]:
    """(the documents, the positive's label): the positive at a position drawn from `seed`."""
    documents = list(negatives)
    position = random.Random(seed).randrange(len(documents) + 1)
    documents.insert(position, positive)
    return documents, label(position)


def answer_of(completion: str) -> str | None:
    """The stripped answer of a well-formed completion, else None."""
    match = _COMPLETION.search(completion)
    return match.group(1).strip() if match else None


def reward(completion: str, gold_label: str) -> float:
    """Rank-R1's reward: 1.0 for a well-formed completion whose answer is the gold label, else 0.0."""
    return 1.0 if answer_of(completion) == gold_label.strip() else 0.0


def chosen_index(completion: str, candidates: int) -> int | None:
    """The 0-based document a completion picks, or None when it names none of the `candidates`."""
    match = _LABEL.fullmatch(answer_of(completion) or "")
    index = int(match.group(1)) - 1 if match else -1
    return index if 0 <= index < candidates else None


def setwise_topk(documents: Sequence, choose: Callable[[Sequence], int | None], k: int = 10,
                 set_size: int = 20) -> list:
    """The `k` best documents, best first, by a setwise heapsort; `choose(subset)` returns the 0-based
    index of the best document of a subset of at most `set_size` (None: no valid choice)."""
    if set_size < 2:
        raise ConfigError(f"set_size must be at least 2 (a node and one child), got {set_size}.")
    heap, children = list(documents), set_size - 1

    def sift_down(node: int, size: int) -> None:
        while True:
            first = children * node + 1
            if first >= size:
                return
            members = [node, *range(first, min(first + children, size))]
            picked = choose([heap[i] for i in members])
            best = members[picked] if picked is not None and 0 <= picked < len(members) else node
            if best == node:
                return
            heap[node], heap[best] = heap[best], heap[node]
            node = best

    for node in range(len(heap) // children, -1, -1):
        sift_down(node, len(heap))
    ranked = []
    for size in range(len(heap), 0, -1):
        ranked.append(heap[0])
        if len(ranked) == min(k, len(documents)):
            break
        heap[0] = heap[size - 1]
        sift_down(0, size - 1)
    return ranked


def chat_text(tokenizer, messages: list[dict]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n"  # a base model: plain text


def generated_choice(model, tokenizer, query: str, documents: Sequence[str], *, max_new_tokens: int = 96,
                     max_document_chars: int = 300) -> int | None:
    """Rank-R1's "generation" scoring: the model reasons and names a label; the 0-based document it
    names, or None for a malformed answer (the heapsort then keeps the parent)."""
    import torch

    text = chat_text(tokenizer, setwise_messages(query, documents, max_document_chars))
    inputs = tokenizer(text, return_tensors="pt").to(next(model.parameters()).device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    completion = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return chosen_index(completion, len(documents))


def rerank(first_stage: Sequence[int], documents: Sequence[str], query: str, choose_among, *,
           candidates: int = 20, k: int = 10, set_size: int = 4) -> list[int]:
    """The first stage's order with its top `candidates` reordered so the setwise top k come first;
    `choose_among(query, texts)` picks the best of a set (e.g. generated_choice with a model bound)."""
    if candidates < 1 or k < 1:
        raise ConfigError(f"candidates and k must be at least 1, got {candidates} and {k}.")
    top = list(first_stage[:candidates])
    best = setwise_topk(top, lambda subset: choose_among(query, [documents[i] for i in subset]), k=k,
                        set_size=set_size)
    return best + [d for d in top if d not in best] + list(first_stage[candidates:])
