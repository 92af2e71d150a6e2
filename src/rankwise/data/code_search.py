"""A natural-language → code retrieval set built from the Python standard library (ships with every CPython).

Each pair is one function or method with a docstring:
    query     the docstring's summary: its first paragraph, whitespace collapsed
    document  the function's source with the docstring removed (decorators and signature kept)
This is the setting of Adapted Dense Retrieval (NL→code) and of the rerankers built on it. Splits are by
top-level package (json.decoder and json.encoder go together), assigned from a hash of the package name,
so the test split's packages are never seen in training. The set is deterministic for a given CPython:
files, functions and duplicates are visited in sorted order, and the Python version is recorded.

Left out: the test suites (test/, */tests/, idlelib/idle_test), site-packages, private modules, classes
and functions (a name starting with "_", dunder methods excepted), summaries under `min_words` words,
bodies under `min_lines` lines once the docstring is gone (a `pass` or a single `raise` says nothing
about its summary), and every pair whose summary is shared with another (ambiguous queries).
"""

from __future__ import annotations

import ast
import hashlib
import re
import sys
import sysconfig
from pathlib import Path

from ..errors import ConfigError, DataError

SPLIT_NAMES = ("train", "dev", "test")
_SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3", "ensurepip"}


def _summary(docstring: str) -> str:
    return " ".join(docstring.strip().split("\n\n")[0].split())


def _without_docstring(source_lines: list[str], node: ast.AST) -> str | None:
    """The function's source (from its first decorator) minus the docstring's lines, dedented by the
    first line's indent (a multi-line string in the body may start at column 0: it is left as it is)."""
    start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
    doc = node.body[0]
    lines = source_lines[start:doc.lineno - 1] + source_lines[doc.end_lineno:node.end_lineno]
    indent = len(lines[0]) - len(lines[0].lstrip())
    kept = (line[indent:] if not line[:indent].strip() else line for line in lines)
    return "\n".join(kept).strip("\n") or None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _pairs_of_file(path: Path, module: str, min_words: int, min_lines: int) -> list[dict]:
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return []  # a file this interpreter cannot parse (encoding test files, Python 2 leftovers)
    lines, pairs = source.splitlines(), []

    def visit(node: ast.AST, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not _private(child.name):
                visit(child, f"{owner}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(child)
                if _private(child.name) or not docstring or len(child.body) < 2:
                    continue
                query, document = _summary(docstring), _without_docstring(lines, child)
                body_lines = child.body[-1].end_lineno - child.body[1].lineno + 1
                if len(query.split()) >= min_words and body_lines >= min_lines:
                    pairs.append({"id": f"{module}:{owner}{child.name}", "module": module, "query": query,
                                  "document": document})

    visit(tree, "")
    return pairs


def stdlib_code_pairs(root: str | Path | None = None, *, min_words: int = 4,
                      min_lines: int = 2) -> list[dict]:
    """Every kept (query, document) pair of the standard library under `root` (default: this CPython's),
    sorted by id. Each pair: {"id": "module:Class.method", "module", "query", "document"}."""
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of Python sources; give one (or none, for the standard "
                        "library).")
    pairs = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if _SKIPPED_DIRS & set(parts[:-1]) or parts[-1].startswith("test_"):
            continue
        names = parts[:-1] if parts[-1] == "__init__" else parts
        if names and all(re.fullmatch(r"[A-Za-z]\w*", name) for name in names):  # importable, not private
            pairs += _pairs_of_file(path, ".".join(names), min_words, min_lines)
    if not pairs:
        raise DataError(f"{root} holds no documented functions (public, with a docstring); give a folder of "
                        "documented Python sources (or none, for the standard library).")
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair["query"]] = counts.get(pair["query"], 0) + 1
    return sorted((p for p in pairs if counts[p["query"]] == 1), key=lambda p: p["id"])


def split_of(module: str, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> str:
    """The split of `module`'s top-level package: a fixed point in [0, 1) from its sha256."""
    package = module.split(".")[0]
    point = int(hashlib.sha256(package.encode()).hexdigest()[:8], 16) / 16 ** 8
    edge = 0.0
    for name, fraction in zip(SPLIT_NAMES, fractions, strict=True):
        edge += fraction
        if point < edge:
            return name
    return SPLIT_NAMES[-1]


def code_search_splits(root: str | Path | None = None,
                       fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> dict:
    """{"train": [...], "dev": [...], "test": [...], "python": "3.11.7"}: the pairs split by package."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ConfigError(f"fractions must be three non-negative shares of train, dev, test summing to 1; "
                          f"got {fractions}.")
    splits: dict = {name: [] for name in SPLIT_NAMES}
    for pair in stdlib_code_pairs(root):
        splits[split_of(pair["module"], fractions)].append(pair)
    splits["python"] = ".".join(map(str, sys.version_info[:3]))
    return splits
