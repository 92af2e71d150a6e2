"""Shared by the fuzz_*.py harnesses: the promise check, finding records, a per-process temp dir.

The promise checked: a bad input raises a rankwise.errors.RankwiseError subclass whose message is one
non-empty line; never any other exception type; never unpickling. `guarded(fn, *args)` runs one call
and lets a RankwiseError pass (after checking its message); anything else propagates as a finding.

Environment (set by run_all.py; all optional, so `python fuzz/fuzz_x.py crash-file` reproduces a crash):
    FUZZ_KNOWN    a JSON file listing signatures already found in this run: those are swallowed, so the
                  fuzzer keeps looking for new ones after a restart instead of re-finding the first
    FUZZ_FINDING  where to write a JSON description of the finding that stops this process
    FUZZ_TMPDIR   the folder to write fuzzed files into (else a fresh temporary one)

Import this module only after the instrumented `import rankwise...` block of the harness.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import traceback
import warnings
import zlib
from pathlib import Path

import atheris
import numpy as np
import torch

import rankwise
from rankwise.errors import RankwiseError

# Library warnings (unknown keys, unchecked base model...) are expected on fuzzed input; they are not
# part of the promise and printing thousands of them slows the fuzzer down.
warnings.simplefilter("ignore")
torch.set_num_threads(1)

_RANKWISE_DIR = Path(rankwise.__file__).resolve().parent
_KNOWN: set[str] = set()
if os.environ.get("FUZZ_KNOWN") and Path(os.environ["FUZZ_KNOWN"]).is_file():
    _KNOWN = set(json.loads(Path(os.environ["FUZZ_KNOWN"]).read_text()))


class PromiseBroken(AssertionError):
    """A contract the harness checks itself: multi-line message, model changed by a failed load, pickle."""


# --- one temp dir per process ---------------------------------------------------------------------------
def work_dir(name: str) -> Path:
    """A folder for this process's fuzzed files (reused for every input)."""
    base = os.environ.get("FUZZ_TMPDIR")
    if base:
        path = Path(base) / f"{name}-{os.getpid()}"
        path.mkdir(parents=True, exist_ok=True)
    else:
        fast = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # small writes are slow on disk
        path = Path(tempfile.mkdtemp(prefix=f"rankwise-fuzz-{name}-", dir=fast))
    atexit.register(shutil.rmtree, path, True)
    return path


def mode_and_payload(data: bytes, modes: int) -> tuple[int, bytes]:
    """The first byte picks the mode (modulo `modes`), the rest is the fuzzed file."""
    if not data:
        return 0, b""
    return data[0] % modes, data[1:]


# --- never pickle ---------------------------------------------------------------------------------------
_PICKLE_USED: list[str] = []


def _flag(what: str, real):
    def wrapper(*args, **kwargs):
        _PICKLE_USED.append(what)
        return real(*args, **kwargs)

    return wrapper


class _FlaggingUnpickler(pickle.Unpickler):
    def load(self):
        _PICKLE_USED.append("pickle.Unpickler.load")
        return super().load()


pickle.load = _flag("pickle.load", pickle.load)
pickle.loads = _flag("pickle.loads", pickle.loads)
pickle.Unpickler = _FlaggingUnpickler
torch.load = _flag("torch.load", torch.load)
np.load = _flag("numpy.load", np.load)


# --- outcome coverage ------------------------------------------------------------------------------------
# Only rankwise's Python is instrumented, so inputs that reach different checks inside safetensors (Rust),
# torch or json (C) look alike to libFuzzer and are dropped from the corpus. Each outcome (function,
# exception type, message with the variable parts removed) is hashed to one of 256 leaves of a generated
# if-tree whose every leaf is a distinct instrumented edge: a new kind of rejection counts as new coverage.
def _tree(depth: int, bit: int, indent: str) -> str:
    if depth == 0:
        return f"{indent}return {bit}\n"
    return (
        f"{indent}if b & {1 << (depth - 1)}:\n"
        + _tree(depth - 1, bit * 2 + 1, indent + "    ")
        + f"{indent}else:\n"
        + _tree(depth - 1, bit * 2, indent + "    ")
    )


_namespace: dict = {}
exec(compile("def _leaf(b):\n" + _tree(8, 0, "    "), "<rankwise-fuzz-outcomes>", "exec"), _namespace)
_leaf = atheris.instrument_func(_namespace["_leaf"])
_VARIABLE = re.compile(r"'[^']*'|\"[^\"]*\"|\d+|/\S*")


def _shape_of(result) -> str:
    """A coarse description of a successful result: ({name: tensor}, metadata) -> count and dtypes."""
    first = result[0] if isinstance(result, tuple) and result else result
    if isinstance(first, dict) and first and all(torch.is_tensor(v) for v in first.values()):
        return f"{min(len(first), 9)} {sorted({str(v.dtype) for v in first.values()})}"
    return type(result).__name__


def outcome(where: str, what: str, exact: bool = False) -> None:
    """Mark one kind of outcome as coverage (see above); exact=False drops the message's variable parts."""
    what = what if exact else _VARIABLE.sub("_", what)[:80]
    _leaf(zlib.crc32(f"{where}|{what}".encode()) & 255)


# --- findings -------------------------------------------------------------------------------------------
def _frames(err: BaseException) -> tuple[str, str]:
    """(innermost frame inside rankwise, innermost frame overall) of err's traceback, as text."""
    frames = traceback.extract_tb(err.__traceback__)
    inside = [f for f in frames if Path(f.filename).resolve().is_relative_to(_RANKWISE_DIR)]

    def show(frame) -> str:
        path = Path(frame.filename).resolve()
        shown = path.relative_to(_RANKWISE_DIR.parent) if path.is_relative_to(_RANKWISE_DIR.parent) else path
        return f"{shown}:{frame.lineno} in {frame.name}"

    return (
        show(inside[-1]) if inside else "(no rankwise frame)",
        show(frames[-1]) if frames else "(no frame)",
    )


_TMP_PATH = re.compile(r"/(?:dev/shm|tmp)/rankwise-fuzz-[^/]*/")


def _first_line(text: str, limit: int = 300) -> str:
    text = _TMP_PATH.sub("$TMP/", text)  # the same finding reads the same in every run
    lines = text.splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[:limit] + "..."


def finding(err: BaseException, kind: str | None = None) -> None:
    """Record `err` as a finding and return only if it is already known (then the caller swallows it).

    kind: None for an exception of the wrong type; else the name of the broken contract.
    """
    raised_at, innermost = _frames(err)
    signature = f"{kind or type(err).__name__} @ {raised_at}"
    if signature in _KNOWN:
        return
    record = {
        "signature": signature,
        "kind": kind or "wrong exception type",
        "type": type(err).__qualname__,
        "message": _first_line(str(err)),
        "message_lines": len(str(err).splitlines()),
        "raised_at": raised_at,
        "innermost_frame": innermost,
    }
    if os.environ.get("FUZZ_FINDING"):
        Path(os.environ["FUZZ_FINDING"]).write_text(json.dumps(record, indent=1))
    print(f"\n=== rankwise fuzz finding: {json.dumps(record)}", file=sys.stderr, flush=True)
    if kind is None:
        raise err
    raise PromiseBroken(f"{kind}: {type(err).__name__}: {str(err)!r}") from err


def check_message(err: RankwiseError) -> None:
    message = str(err)
    if not message.strip() or "\n" in message or "\r" in message:
        finding(err, "message is not one line")


def guarded(fn, *args, **kwargs):
    """fn(*args, **kwargs), or None when it raised a RankwiseError with a one-line message."""
    del _PICKLE_USED[:]
    where = getattr(fn, "__qualname__", str(fn))
    try:
        result = fn(*args, **kwargs)
        outcome(where, f"ok {_shape_of(result)}", exact=True)
        return result
    except RankwiseError as err:
        outcome(where, f"{type(err).__name__}: {err}")
        check_message(err)
        return None
    except Exception as err:  # noqa: BLE001 - everything else is what we are looking for
        finding(err)
        return None
    finally:
        if _PICKLE_USED:
            used = RuntimeError(f"unpickling during {getattr(fn, '__name__', fn)}: {_PICKLE_USED}")
            del _PICKLE_USED[:]
            finding(used, "pickle used")


# --- the tiny model of tests/conftest.py ------------------------------------------------------------------
TINY_VOCAB = 64


def make_tiny_llama(seed: int = 0):
    """The same model as tests/conftest.py make_tiny_llama (copied: fuzz/ does not import tests/)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"  # templates the harnesses build on (not fuzz inputs themselves)
