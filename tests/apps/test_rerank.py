"""Rank-R1's reward, prompt, candidate shuffling and setwise heapsort."""

from __future__ import annotations

import random

import pytest

from rankwise.apps.rerank import (
    answer_of,
    chosen_index,
    reward,
    setwise_messages,
    setwise_topk,
    shuffled_candidates,
)
from rankwise.errors import ConfigError, DataError


@pytest.mark.parametrize(("completion", "expected"), [
    ("<think>doc 3 names the function</think><answer>[3]</answer>", 1.0),
    ("<think>\nmulti\nline\n</think>\n\n<answer>  [3] \n</answer>", 1.0),  # whitespace around the answer
    ("<think>x</think><answer>[2]</answer>", 0.0),  # the wrong label
    ("<answer>[3]</answer>", 0.0),  # no reasoning block: a format failure
    ("<think>x</think> so [3]", 0.0),
    ("[3]", 0.0),
])
def test_reward_needs_the_format_and_the_gold_label(completion, expected):
    assert reward(completion, "[3]") == expected


def test_answers_and_chosen_indices():
    assert answer_of("<think>a</think><answer> [12] </answer>") == "[12]"
    assert chosen_index("<think>a</think><answer>[2]</answer>", 4) == 1
    assert chosen_index("<think>a</think><answer>[5]</answer>", 4) is None  # no such candidate
    assert chosen_index("<think>a</think><answer>2</answer>", 4) is None
    assert chosen_index("no tags", 4) is None


def test_the_prompt_lists_every_document_under_its_label():
    messages = setwise_messages("read a file", ["def a():\n    pass", "def b(): return 1", "x" * 50],
                                max_document_chars=10)
    system, user = messages
    assert system["role"] == "system" and "<think>" in system["content"] and "<answer>" in system["content"]
    assert 'Given the query: "read a file"' in user["content"]
    assert "[1] def a(): p" in user["content"] and "[2] def b(): r" in user["content"]
    assert "[3] xxxxxxxxxx\n" in user["content"]  # cut to 10 characters
    with pytest.raises(ConfigError, match="at least 2 documents"):
        setwise_messages("q", ["only one"])
    with pytest.raises(DataError, match="the query is empty"):
        setwise_messages("  ", ["a", "b"])


def test_shuffled_candidates_put_the_positive_under_its_label_reproducibly():
    positions = set()
    for seed in range(40):
        documents, gold = shuffled_candidates("POS", ["n1", "n2", "n3"], seed)
        assert documents[int(gold[1:-1]) - 1] == "POS" and sorted(documents) == ["POS", "n1", "n2", "n3"]
        assert shuffled_candidates("POS", ["n1", "n2", "n3"], seed) == (documents, gold)
        positions.add(gold)
    assert positions == {"[1]", "[2]", "[3]", "[4]"}


@pytest.mark.parametrize(("n", "set_size", "k"),
                         [(100, 20, 10), (37, 4, 5), (10, 2, 10), (5, 20, 3), (1, 3, 1)])
def test_setwise_heapsort_top_k_equals_sorting_by_a_scorer(n, set_size, k):
    scores = random.Random(n).sample(range(1000), n)
    calls = []

    def choose(subset):
        calls.append(len(subset))
        return max(range(len(subset)), key=lambda i: scores[subset[i]])

    ranked = setwise_topk(list(range(n)), choose, k=k, set_size=set_size)
    assert ranked == sorted(range(n), key=lambda d: -scores[d])[:k]
    assert all(size <= set_size for size in calls)


def test_an_invalid_choice_keeps_the_parent_and_a_bad_set_size_is_refused():
    # nothing ever moves down: the root is popped, the last document takes its place and is popped next
    assert setwise_topk([3, 1, 2], lambda subset: None, k=3, set_size=3) == [3, 2, 1]
    with pytest.raises(ConfigError, match="set_size must be at least 2"):
        setwise_topk([1, 2], lambda subset: 0, set_size=1)


def test_rerank_puts_the_setwise_top_k_first_and_keeps_the_rest_in_order():
    from rankwise.apps.rerank import rerank

    documents = [f"doc {i}" for i in range(10)]
    first_stage = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    by_number = lambda query, texts: max(range(len(texts)), key=lambda i: -int(texts[i].split()[1]))  # noqa: E731
    ordered = rerank(first_stage, documents, "q", by_number, candidates=6, k=2, set_size=3)
    assert ordered == [4, 5, 9, 8, 7, 6, 3, 2, 1, 0]  # the two lowest numbers of the top 6 first
    with pytest.raises(ConfigError, match="candidates and k must be at least 1"):
        rerank(first_stage, documents, "q", by_number, candidates=0)


def test_generated_choice_reads_the_label_a_model_writes():
    from rankwise.apps.rerank import generated_choice
    from rankwise.models import load

    model, tokenizer = load("tiny-llama")
    choice = generated_choice(model, tokenizer, "read a file", ["a", "b", "c"], max_new_tokens=4)
    assert choice is None or 0 <= choice < 3  # a random model rarely writes the format: None keeps order
