"""Plain English text for calibration and perplexity, and a reader for the user's own text files.

The bundled corpus is CPython's documentation topics, the text `help()` shows (the `pydoc_data.topics`
module, shipped with every CPython; © Python Software Foundation, PSF License v2). Its topics, in
sorted order, are split apart: every third topic is held out for evaluation and the rest is for
calibration, so no evaluation text is ever seen while calibrating.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import DataError

SPLITS = ("calibration", "evaluation")


def corpus_text(split: str) -> str:
    """The bundled text of `split` ("calibration" or "evaluation")."""
    from pydoc_data.topics import topics

    if split not in SPLITS:
        raise DataError(f"unknown corpus split {split!r}; use one of {', '.join(SPLITS)}.")
    held_out = split == "evaluation"
    chosen = [key for index, key in enumerate(sorted(topics)) if (index % 3 == 2) == held_out]
    return "\n\n".join(topics[key] for key in chosen)


def read_text_file(path: str | os.PathLike) -> str:
    """The text of a UTF-8 .txt file, or of the "text" field of every line of a .jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give a .txt or .jsonl file of text.")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8.") from None
    if path.suffix == ".jsonl":
        parts = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg}).") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{path}:{number}: each line must be an object with a \"text\" string.")
            parts.append(row["text"])
        raw = "\n\n".join(parts)
    if not raw.strip():
        raise DataError(f"{path}: holds no text; give at least one sequence's worth.")
    return raw


def token_blocks(tokenizer, text: str, length: int, count: int | None = None,
                 source: str = "the text") -> torch.Tensor:
    """(n, length) token ids: consecutive, non-overlapping blocks of `text`, at most `count` of them, taken
    evenly across the whole text when it holds more."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    available = len(ids) // length
    if available == 0:
        raise DataError(f"{source} has {len(ids)} tokens, fewer than one block of {length}; give more text "
                        "or a shorter sequence length.")
    blocks = torch.tensor(ids[: available * length]).reshape(available, length)
    if count is not None and count < available:
        blocks = blocks[torch.linspace(0, available - 1, count).round().long()]
    return blocks
