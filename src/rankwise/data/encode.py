"""Chat-template formatting, assistant-only labels and padding for prompt/answer examples.

The tokenizer's own chat template is used (never a hand-written one), so training sees exactly the
text that `format_prompt` gives at generation time.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, DataError

IGNORE_INDEX = -100  # torch's cross_entropy skips these labels


def format_prompt(tokenizer, prompt: str) -> str:
    """`prompt` as one user turn in the tokenizer's chat template, ending with the assistant's header.

    A tokenizer without a chat template (a base model) gets `prompt + "\\n"`.
    """
    if not getattr(tokenizer, "chat_template", None):
        return prompt + "\n"
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def _full_text(tokenizer, prompt: str, answer: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        return prompt + "\n" + answer
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


def _ids(tokenizer, text: str) -> list[int]:
    # The rendered template already holds its special tokens; adding BOS again would double it.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _answer_ids(tokenizer, prompt_ids: list[int], full_ids: list[int], answer: str) -> list[int]:
    """Token ids after the prompt, ending with the end-of-turn token (what generation stops on).

    Whatever the template writes after that token (SmolLM2: a newline) is dropped: generation never
    produces it, so there is nothing to learn there.
    """
    eos = tokenizer.eos_token_id
    if full_ids[: len(prompt_ids)] == prompt_ids:
        tail = full_ids[len(prompt_ids):]
    else:  # the template merged a token across the prompt/answer boundary: tokenize the answer alone
        tail = _ids(tokenizer, answer)
    if eos is None:
        return tail
    if eos in tail:
        return tail[: len(tail) - tail[::-1].index(eos)]
    return tail + [eos]


def encode_example(tokenizer, example: dict, max_length: int) -> dict[str, list[int]]:
    """{"input_ids", "labels"}: the whole chat, with labels -100 on the prompt so the loss covers only
    the answer and its end-of-turn token. Longer chats are cut on the right to `max_length`; a prompt
    that leaves no room for any answer token raises DataError (it would train on nothing)."""
    prompt_ids = _ids(tokenizer, format_prompt(tokenizer, example["prompt"]))
    full_ids = _ids(tokenizer, _full_text(tokenizer, example["prompt"], example["answer"]))
    answer_ids = _answer_ids(tokenizer, prompt_ids, full_ids, example["answer"])
    if len(prompt_ids) >= max_length:
        raise DataError(
            f"an example's prompt is {len(prompt_ids)} tokens, which leaves no room for its answer within "
            f"max_length={max_length}; raise max_length or shorten the prompt {example['prompt'][:50]!r}..."
        )
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def collate(features: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids with `pad_token_id`, labels with -100, attention_mask 1 on real tokens.

    Features without "labels" get labels equal to their input_ids (plain language modelling).
    """
    if pad_token_id is None:
        raise ConfigError("collate needs a pad_token_id; a tokenizer without one can use its eos_token_id.")
    if not features:
        raise DataError("collate got an empty batch.")
    width = max(len(f["input_ids"]) for f in features)
    input_ids, attention_mask, labels = [], [], []
    for f in features:
        pad = width - len(f["input_ids"])
        input_ids.append(list(f["input_ids"]) + [pad_token_id] * pad)
        attention_mask.append([1] * len(f["input_ids"]) + [0] * pad)
        labels.append(list(f.get("labels", f["input_ids"])) + [IGNORE_INDEX] * pad)
    return {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "attention_mask": torch.tensor(attention_mask, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
    }
