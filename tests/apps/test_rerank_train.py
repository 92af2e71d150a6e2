"""Rank-R1 training: the GRPO sets, the format-only cold start, the TRL reward wrapper, and GRPO moving
only the LoRA on tiny-llama."""

from __future__ import annotations

import pytest
import torch

from rankwise.adapters import adapt
from rankwise.apps.rerank import answer_of, chosen_index, label
from rankwise.apps.rerank_train import (
    PAPER_LORA,
    cold_start,
    cold_start_answers,
    cold_start_features,
    rank_r1_reward,
    reward_means,
    setwise_examples,
    train_grpo,
)
from rankwise.errors import ConfigError, DataError
from rankwise.models import load

DOCUMENTS = [f"def add_{i}(x):\n    return x + {i}" for i in range(10)]
QUERIES = [f"Add {i} to a number." for i in range(10)]
FIRST_STAGE = [[(i + j) % 10 for j in range(10)] for i in range(10)]  # each query's own document first


def test_sets_hold_the_positive_at_its_label_among_the_first_stages_best_negatives():
    examples = setwise_examples(QUERIES, DOCUMENTS, FIRST_STAGE, set_size=3, seed=1)
    golds = set()
    for i, example in enumerate(examples):
        user = example["prompt"][-1]["content"]
        listed = [line for line in user.splitlines() if line.startswith("[")]
        assert example["candidates"] == len(listed) == 3
        gold = int(example["gold"].strip("[]")) - 1
        assert f"return x + {i}" in listed[gold]
        negatives = {(i + 1) % 10, (i + 2) % 10}  # the first stage's next two, never the positive again
        assert {int(line.rsplit("+ ", 1)[1]) for k, line in enumerate(listed) if k != gold} == negatives
        golds.add(gold)
    assert len(golds) > 1  # the positive's position is drawn, not fixed


def test_sets_refuse_too_few_documents():
    with pytest.raises(DataError, match="needs at least 4 documents"):
        setwise_examples(QUERIES[:3], DOCUMENTS[:3], FIRST_STAGE[:3], set_size=4)
    with pytest.raises(ConfigError, match="set_size must be at least 2"):
        setwise_examples(QUERIES, DOCUMENTS, FIRST_STAGE, set_size=1)


@pytest.fixture(scope="module")
def tiny():
    return load("tiny-llama")


def test_cold_start_teaches_the_format_with_random_labels_only(tiny):
    _, tokenizer = tiny
    examples = setwise_examples(QUERIES, DOCUMENTS, FIRST_STAGE, set_size=4)
    features = cold_start_features(tokenizer, examples, cold_start_answers(examples, seed=0))
    guessed_gold = 0
    for feature, example in zip(features, examples, strict=True):
        answer_ids = [t for t in feature["labels"] if t != -100]
        assert feature["labels"][: len(feature["input_ids"]) - len(answer_ids)] == \
            [-100] * (len(feature["input_ids"]) - len(answer_ids))  # the loss covers the answer alone
        assert answer_ids[-1] == tokenizer.eos_token_id
        completion = tokenizer.decode(answer_ids, skip_special_tokens=True)
        assert chosen_index(completion, example["candidates"]) is not None  # well formed, in range
        guessed_gold += answer_of(completion) == example["gold"]
    assert guessed_gold < len(examples)  # labels are not the gold ones: no relevance signal


def test_reward_wrapper_reads_text_and_chat_completions():
    chat = [[{"role": "assistant", "content": "<think>x</think><answer>[2]</answer>"}]]
    assert rank_r1_reward(chat, gold=["[2]"]) == [1.0]
    assert rank_r1_reward(["<think>x</think><answer>[1]</answer>", "[2]"], gold=["[2]", "[2]"]) == [0.0, 0.0]


def _snapshot(model):
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    return adapter, base


def test_grpo_and_cold_start_train_only_the_lora(tmp_path):
    model, tokenizer = load("tiny-llama")
    adapt(model, "lora", **PAPER_LORA)
    examples = setwise_examples(QUERIES, DOCUMENTS, FIRST_STAGE, set_size=3)
    adapter, base = _snapshot(model)

    def varied_reward(completions, **_):  # the 0/1 reward is always 0 for a random model: no gradient
        return [float(sum(map(ord, c[-1]["content"])) % 3) for c in completions]

    curve = train_grpo(model, tokenizer, examples, output_dir=str(tmp_path / "grpo"), steps=2, generations=2,
                       max_completion_length=6, reward_function=varied_reward)
    assert [r["step"] for r in curve] == [1, 2] and all("reward" in r for r in curve)
    after, base_after = _snapshot(model)
    assert any(not torch.equal(adapter[n], after[n]) for n in adapter)
    assert all(torch.equal(base[n], base_after[n]) for n in base)
    log = cold_start(model, tokenizer, examples, output_dir=str(tmp_path / "cold"), steps=2, batch_size=2)
    assert [r["step"] for r in log] == [1, 2]
    assert len((tmp_path / "cold" / "cold_start.jsonl").read_text().splitlines()) == len(examples)
    assert all(torch.equal(base[n], p) for n, p in model.named_parameters() if n in base)


def test_grpo_refuses_a_single_generation(tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(ConfigError, match="generations at least 2"):
        train_grpo(model, tokenizer, [{"prompt": [], "gold": label(0)}], output_dir=str(tmp_path),
                   generations=1)


def test_reward_means_average_the_first_and_last_quarter():
    curve = [{"reward": r} for r in (0.0, 0.5, 1.0, 0.25, 0.25, 0.75, 1.0, 1.0)]
    assert reward_means(curve) == {"steps": 2, "first": 0.25, "last": 1.0}
    assert reward_means([{"reward": 0.5}]) == {"steps": 1, "first": 0.5, "last": 0.5}
