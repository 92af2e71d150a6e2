"""Data: prompt/answer loaders, bundled tasks, chat-template encoding with answer-only labels, collation."""

from .encode import IGNORE_INDEX, collate, encode_example, format_prompt
from .loaders import load_examples
from .tasks import DEFAULT_TASK, bundled_task, list_tasks

__all__ = [
    "DEFAULT_TASK", "IGNORE_INDEX", "bundled_task", "collate", "encode_example", "format_prompt",
    "list_tasks", "load_examples",
]
