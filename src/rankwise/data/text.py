"""Plain English text for calibration and perplexity, and a reader for the user's own text files.

The bundled corpus is CPython's documentation topics, the text `help()` shows (the `pydoc_data.topics`
module, shipped with every CPython; © Python Software Foundation, PSF License v2). Its topics, in
sorted order, are split apart: every third topic is held out for evaluation and the rest is for
calibration, so no evaluation text is ever seen while calibrating.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import DataError
from .loaders import _decode, _field, _jsonl_rows

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
    """The text of a UTF-8 .txt file, or the "text" field of every line of a .jsonl file (read by the same
    checks as the prompt/answer loaders, so errors name the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give a .txt or .jsonl file of text.")
    if path.suffix.lower() == ".jsonl":
        raw = "\n\n".join(_field(row, "text", f"{path}:{line}") for line, row in _jsonl_rows(path))
    else:
        raw = _decode(path.read_bytes(), str(path))
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
