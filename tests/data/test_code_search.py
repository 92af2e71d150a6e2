"""The NL→code retrieval set: deterministic, docstrings removed, splits by package never shared."""

from __future__ import annotations

import ast
import textwrap

import pytest

from rankwise.data.code_search import code_search_splits, split_of, stdlib_code_pairs
from rankwise.errors import ConfigError, DataError

MODULE = '''
import os


def join_all(parts, sep="/"):
    """Join every part with the separator given.

    Longer text that is not part of the summary.
    """
    cleaned = [p.strip() for p in parts]
    return sep.join(cleaned)


def stub(x):
    """A stub that only raises an error."""
    raise NotImplementedError


def _helper(x):
    """A private helper that nobody should search."""
    y = x + 1
    return y


class Store:
    @staticmethod
    def load_path(path):
        """Read the whole file at the path."""
        with open(path) as handle:
            return handle.read()

    def same(self):
        """Join every part with the separator given."""
        a = 1
        return a
'''


TOOLS = '''
def count_words(text):
    """Count the words of a text."""
    words = text.split()
    return len(words)
'''


def write_tree(root):
    files = {"pkg/__init__.py": "", "pkg/tools.py": TOOLS, "other.py": MODULE, "test/test_x.py": TOOLS,
             "_private.py": TOOLS.replace("Count", "Tally")}
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_pairs_keep_documented_public_functions_without_their_docstrings(tmp_path):
    pairs = stdlib_code_pairs(write_tree(tmp_path))
    ids = [p["id"] for p in pairs]
    # join_all and Store.same share a summary: ambiguous, both dropped; stub's body is one line; _helper,
    # the test/ folder and the private module are left out
    assert ids == ["other:Store.load_path", "pkg.tools:count_words"]
    pair = pairs[0]
    assert pair["query"] == "Read the whole file at the path."
    assert pair["document"] == ("@staticmethod\ndef load_path(path):\n    with open(path) as handle:\n"
                                "        return handle.read()")


def test_the_set_is_deterministic_and_splits_by_top_level_package(tmp_path):
    root = write_tree(tmp_path)
    first, second = code_search_splits(root), code_search_splits(root)
    assert first == second
    for pair in first["train"] + first["dev"] + first["test"]:
        assert split_of(pair["module"]) == split_of(pair["module"].split(".")[0])
    assert split_of("json.decoder") == split_of("json.encoder")


def test_the_standard_library_set_has_three_disjoint_splits():
    splits = code_search_splits()
    packages = {name: {p["module"].split(".")[0] for p in splits[name]} for name in ("train", "dev", "test")}
    assert all(len(splits[name]) > 50 for name in packages)
    assert not (packages["train"] & packages["test"]) and not (packages["train"] & packages["dev"])
    assert not (packages["dev"] & packages["test"])
    assert splits["python"].count(".") == 2
    queries = [p["query"] for name in packages for p in splits[name]]
    assert len(queries) == len(set(queries))
    for pair in splits["test"]:  # each document still parses, and its function has no docstring
        function = ast.parse(textwrap.dedent(pair["document"])).body[0]
        assert ast.get_docstring(function) is None, pair["id"]


def test_bad_roots_and_fractions_are_refused(tmp_path):
    with pytest.raises(DataError, match="is not a folder of Python sources"):
        stdlib_code_pairs(tmp_path / "missing")
    with pytest.raises(DataError, match="holds no documented functions"):
        stdlib_code_pairs(tmp_path)
    with pytest.raises(ConfigError, match="summing to 1"):
        code_search_splits(write_tree(tmp_path / "lib"), fractions=(0.5, 0.5, 0.5))
