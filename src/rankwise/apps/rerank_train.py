"""Training Rank-R1's setwise reranker: GRPO through TRL's GRPOTrainer on a rankwise LoRA, with an
optional format-only cold start (Zhuang et al., "Rank-R1", SIGIR 2026; the prompt, reward and heapsort
are in rankwise.apps.rerank).

GRPO, as TRL computes it with beta = 0 (no reference model, the TRL and Rank-R1 default): for each prompt
q, G completions o_1..o_G are sampled, each scored with the 0/1 reward r_i, and the policy maximises

    Σ_i Σ_t min(ρ_it Â_i, clip(ρ_it, 1 − ε, 1 + ε) Â_i),   Â_i = (r_i − mean(r)) / std(r),

ρ_it the probability ratio of token t of o_i under the new and the sampling policy.
Trains: only the LoRA's A and B (the paper: r = 16, alpha = 32, dropout 0.05, on every linear layer).

Training sets: each train-split query's positive (its own function) among `set_size − 1` hard negatives,
the first stage's top documents for that query (the paper draws its negatives from Tevatron's MS MARCO
set, which are BM25-mined too), at a seeded random position.

Cold start (not in Rank-R1): the paper's 3B–14B instruction models already write <think>/<answer>, so
their rewards vary from the first step. A 135M model never does (0 of 24 sampled answers here), every
reward is 0, every advantage is 0 and GRPO learns nothing. `cold_start_features` teaches the format
alone: a short supervised run whose answers name a *random* label, so it carries no relevance signal,
and whatever GRPO then gains over the first stage it learned from the reward.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.encode import IGNORE_INDEX
from ..errors import ConfigError, DataError
from .rerank import chat_text, label, reward, setwise_messages, shuffled_candidates

PAPER_LORA = {"rank": 16, "alpha": 32.0, "dropout": 0.05, "targets": "all-linear"}
COLD_START_THINKING = "I compare each document with the query."


def setwise_examples(queries: Sequence[str], documents: Sequence[str], first_stage: Sequence[Sequence[int]],
                     *, set_size: int = 4, seed: int = 0, max_document_chars: int = 300) -> list[dict]:
    """One training set per query: {"prompt": chat messages, "gold": the positive's label, "candidates":
    the set's size}. Query i's
    positive is documents[i]; its negatives are the first stage's best other documents."""
    if set_size < 2:
        raise ConfigError(f"set_size must be at least 2, got {set_size}.")
    if len(documents) < set_size:
        raise DataError(f"a set of {set_size} needs at least {set_size} documents, got {len(documents)}.")
    examples = []
    for i, (query, order) in enumerate(zip(queries, first_stage, strict=True)):
        negatives = [documents[d] for d in order if d != i][: set_size - 1]
        texts, gold = shuffled_candidates(documents[i], negatives, seed * 1_000_003 + i)
        examples.append({"prompt": setwise_messages(query, texts, max_document_chars), "gold": gold,
                         "candidates": len(texts)})
    return examples


def cold_start_answers(examples: Sequence[dict], seed: int = 0) -> list[str]:
    """The cold start's answer to each set: the format with a random label (no relevance signal)."""
    rng = random.Random(seed)
    return [f"<think> {COLD_START_THINKING} </think> <answer>{label(rng.randrange(e['candidates']))}</answer>"
            for e in examples]


def cold_start_features(tokenizer, examples: Sequence[dict], answers: Sequence[str]) -> list[dict]:
    """Encoded {"input_ids", "labels"}: the chat prompt, then the answer and its end-of-turn token, the
    only tokens the loss covers."""
    features = []
    for example, answer in zip(examples, answers, strict=True):
        prompt_ids = tokenizer(chat_text(tokenizer, example["prompt"]), add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        features.append({"input_ids": prompt_ids + answer_ids,
                         "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids})
    return features


def cold_start(model, tokenizer, examples: Sequence[dict], *, output_dir: str, steps: int = 30,
               learning_rate: float = 2e-4, batch_size: int = 4, seed: int = 0) -> list[dict]:
    """The format-only supervised run on `model`'s active adapter, with rankwise's training loop; the
    rendered examples are kept as <output_dir>/cold_start.jsonl. Returns the loop's per-step log."""
    from ..io import atomic_path
    from ..train.config import TrainConfig
    from ..train.loop import train

    answers = cold_start_answers(examples, seed)
    data = Path(output_dir) / "cold_start.jsonl"
    with atomic_path(data) as tmp:
        tmp.write_text("".join(json.dumps({"prompt": chat_text(tokenizer, e["prompt"]), "answer": a}) + "\n"
                               for e, a in zip(examples, answers, strict=True)), encoding="utf-8")
    features = cold_start_features(tokenizer, examples, answers)
    config = TrainConfig(output_dir=output_dir, data=str(data), max_steps=steps, learning_rate=learning_rate,
                         seed=seed, per_device_train_batch_size=batch_size,
                         max_length=max(len(f["input_ids"]) for f in features))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return train(model, features, config, pad_token_id=pad)["log"]


def rank_r1_reward(completions: list, gold: list[str], **_) -> list[float]:
    """TRL reward function: Rank-R1's 0/1 reward of each completion (text or chat messages)."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [reward(text, answer) for text, answer in zip(texts, gold, strict=True)]


def train_grpo(model, tokenizer, examples: Sequence[dict], *, output_dir: str, steps: int = 50,
               learning_rate: float = 1e-4, generations: int = 4, prompts_per_step: int = 2,
               max_completion_length: int = 48, temperature: float = 1.0, seed: int = 0,
               reward_function=rank_r1_reward) -> list[dict]:
    """GRPO on `model`'s active rankwise adapter (its only trainable tensors) with TRL's GRPOTrainer;
    returns one record per step, {"step", "reward", "reward_std", ...} as TRL logs them."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from ..train.hf import RankwiseCallback, build_optimizer

    if min(steps, generations - 1, prompts_per_step, max_completion_length) < 1:
        raise ConfigError("steps, prompts_per_step and max_completion_length must be at least 1 and "
                          f"generations at least 2 (GRPO compares completions), got {steps}, "
                          f"{prompts_per_step}, {max_completion_length} and {generations}.")
    if not examples:
        raise DataError("there are no training prompts for GRPO; give at least one query.")
    args = GRPOConfig(
        output_dir=output_dir, max_steps=steps, learning_rate=learning_rate, seed=seed,
        per_device_train_batch_size=generations * prompts_per_step, num_generations=generations,
        max_completion_length=max_completion_length, temperature=temperature, beta=0.0,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        bf16=False, gradient_checkpointing=False, disable_tqdm=False)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_function, args=args,
                          train_dataset=Dataset.from_list(list(examples)), processing_class=tokenizer,
                          optimizers=(build_optimizer(model, args), None),
                          # GRPO batches are prompt rows, not token ids: no data-driven init
                          callbacks=[RankwiseCallback(init_batches=0)])
    trainer.train()
    model.eval()
    return [{"step": entry["step"], **{k: v for k, v in entry.items() if "reward" in k}}
            for entry in trainer.state.log_history if "reward" in entry]


def reward_means(curve: Sequence[dict]) -> dict:
    """Mean reward over the first and the last quarter of the GRPO steps (at least one step each): the
    learning signal, less noisy than single steps of a few generations."""
    rewards = [record["reward"] for record in curve]
    quarter = max(len(rewards) // 4, 1)
    return {"steps": quarter, "first": sum(rewards[:quarter]) / quarter,
            "last": sum(rewards[-quarter:]) / quarter}
