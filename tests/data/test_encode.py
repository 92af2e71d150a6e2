"""Chat-template encoding: labels mask exactly the prompt; collate pads correctly."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from rankwise.data import IGNORE_INDEX, collate, encode_example, format_prompt
from rankwise.errors import ConfigError, DataError
from rankwise.models import embedded, gguf

EXAMPLE = {"prompt": "Convert the date to ISO format.\nDate: March 5, 2021", "answer": "2021-03-05"}


@pytest.fixture
def tokenizer(cache):
    folder = gguf.ensure_tokenizer(embedded.package_file("smollm2-135m"))
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def test_format_prompt_is_the_chat_template_with_generation_prompt(tokenizer):
    text = format_prompt(tokenizer, "hello")
    assert text == tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


def test_labels_mask_exactly_the_prompt(tokenizer):
    encoded = encode_example(tokenizer, EXAMPLE, max_length=256)
    prompt_text = format_prompt(tokenizer, EXAMPLE["prompt"])
    prompt_len = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    ids, labels = encoded["input_ids"], encoded["labels"]
    assert len(ids) == len(labels)
    assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]  # every answer token is learned
    assert tokenizer.decode(ids[prompt_len:]) == "2021-03-05<|im_end|>"
    assert ids[-1] == tokenizer.eos_token_id  # the end-of-turn token that stops generation
    assert tokenizer.decode(ids[:prompt_len]) == format_prompt(tokenizer, EXAMPLE["prompt"])


def test_truncation_keeps_the_prompt_and_cuts_the_answer(tokenizer):
    full = encode_example(tokenizer, EXAMPLE, max_length=256)
    prompt_len = full["labels"].count(IGNORE_INDEX)
    cut = encode_example(tokenizer, EXAMPLE, max_length=prompt_len + 2)
    assert cut["input_ids"] == full["input_ids"][: prompt_len + 2]
    assert cut["labels"] == full["labels"][: prompt_len + 2]
    with pytest.raises(DataError, match="max_length"):
        encode_example(tokenizer, EXAMPLE, max_length=prompt_len)


def test_tokenizer_without_chat_template_falls_back_to_plain_text(tokenizer):
    tokenizer.chat_template = None
    assert format_prompt(tokenizer, "hi") == "hi\n"
    encoded = encode_example(tokenizer, {"prompt": "hi", "answer": "yo"}, max_length=32)
    answer = [t for t, label in zip(encoded["input_ids"], encoded["labels"]) if label != IGNORE_INDEX]
    assert answer[-1] == tokenizer.eos_token_id and tokenizer.decode(answer[:-1]) == "yo"


def test_collate_right_pads():
    features = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = collate(features, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collate_without_labels_and_bad_input():
    assert collate([{"input_ids": [1, 2]}], pad_token_id=0)["labels"].tolist() == [[1, 2]]
    with pytest.raises(ConfigError, match="pad_token_id"):
        collate([{"input_ids": [1]}], pad_token_id=None)
    with pytest.raises(DataError, match="empty batch"):
        collate([], pad_token_id=0)
