"""Atomic, durable writes: a save either completes or leaves the previous file/directory untouched.

    with atomic_path("ckpt/model.safetensors") as tmp:   # write anything to `tmp`
        save_file(tensors, tmp)
    with atomic_directory("runs/adapter") as tmp_dir:     # build a whole directory in `tmp_dir`
        save_tensors(tmp_dir / "adapter.safetensors", tensors)
        write_json(tmp_dir / "adapter.json", meta)

A file is written to a temporary sibling (same directory, so the rename never crosses filesystems),
fsync'ed, renamed over the target with os.replace, and the directory is fsync'ed so the rename itself
is durable. A directory is built in a temporary sibling and swapped in only when the `with` block ends
without an exception; on Linux the swap is one renameat2(RENAME_EXCHANGE), elsewhere two renames.
Guarantee: a crash (or exception) at any point leaves the target holding either the complete old
content or the complete new content; with a journaling filesystem this also holds across power loss.
Temporaries are removed on exceptions; ones left by a killed process (`.<name>.tmp-<pid>-<random>`)
are ignored by loaders and removed by the next write to the same target once that pid is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import AdapterFileError, RankwiseError

__all__ = ["atomic_path", "atomic_directory", "check_writable", "save_tensors", "write_json"]

_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


def _temp_sibling(target: Path, kind: str = "tmp") -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; not possible (nor needed) on Windows, where opening a directory fails.
    with contextlib.suppress(OSError):
        _fsync_file(path)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            _fsync_file(Path(dirpath) / filename)
        _fsync_dir(Path(dirpath))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _clean_stale_temporaries(target: Path) -> None:
    """Tidy temporaries of `target` left by processes killed mid-save (pids on this host only).

    A `.old-*` directory with no `target` beside it is the only complete copy (the process died
    between the two renames of the fallback swap), so it is put back rather than deleted.
    """
    if not target.parent.is_dir():
        return
    for entry in sorted(target.parent.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if not match or match["name"] != target.name or _pid_alive(int(match["pid"])):
            continue
        if match["kind"] == "old" and not target.exists():
            os.rename(entry, target)
        else:
            _remove(entry)


def _cannot_write(target: Path, err: OSError) -> AdapterFileError:
    reason = err.strerror or str(err) or type(err).__name__
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        reason = "a folder on the path is a file"
    return AdapterFileError(f"cannot write {target}: {reason} ({err.filename or target}); free some "
                            "space, fix the permissions or pick another path. Nothing saved there before was "
                            "replaced.")


def check_writable(directory: str | os.PathLike) -> Path:
    """Prove, before long work starts, that `directory` can be created and written: its nearest existing
    folder takes a probe file (removed at once). Nothing is created."""
    directory = Path(directory).expanduser().absolute()
    existing = next(path for path in (directory, *directory.parents) if path.exists())
    if not existing.is_dir():
        raise AdapterFileError(f"cannot write {directory}: {existing} is a file; pick another folder path.")
    probe = _temp_sibling(existing / "probe")
    try:
        probe.write_bytes(b"")
    except OSError as err:
        raise _cannot_write(directory, err) from None
    probe.unlink()
    return directory


@contextlib.contextmanager
def _os_errors_named(target: Path) -> Iterator[None]:
    """A failed write (full disk, read-only filesystem, permission, a path under a file) as one error
    naming the target; rankwise's own errors pass through."""
    try:
        yield
    except RankwiseError:
        raise
    except OSError as err:
        raise _cannot_write(target, err) from err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically and durably.

    Write the whole file to the yielded path (any writer that takes a filename). If the block raises,
    the temporary is deleted and `path` is left as it was.
    """
    target = Path(path)
    tmp = _temp_sibling(target)
    try:
        with _os_errors_named(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            _clean_stale_temporaries(target)
            yield tmp
        if not tmp.is_file():  # the caller's bug, not the disk's
            raise FileNotFoundError(f"nothing was written to the temporary file for {target}")
        with _os_errors_named(target):
            _fsync_file(tmp)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
    finally:
        _remove(tmp)  # no-op after a successful replace


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0  # EINVAL/ENOSYS (filesystem or kernel without support): caller falls back


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces the directory `path` as a whole.

    Everything previously in `path` is replaced (not merged), so use a directory of its own. If the
    block raises, the temporary directory is deleted and `path` keeps its old content.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise AdapterFileError(f"{target} exists and is not a directory; pick another path.")
    tmp = _temp_sibling(target)
    try:
        with _os_errors_named(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            _clean_stale_temporaries(target)
            tmp.mkdir()
            yield tmp
            _fsync_tree(tmp)
            if not target.exists():
                os.rename(tmp, target)
            elif _exchange(tmp, target):
                pass  # `tmp` now holds the old content and is removed below
            else:
                # Fallback: between these two renames `target` is briefly absent, but the old content
                # survives as `.name.old-*`, never half-replaced.
                old = _temp_sibling(target, "old")
                os.rename(target, old)
                os.rename(tmp, target)
                _remove(old)
            _fsync_dir(target.parent)
    finally:
        _remove(tmp)


def _sort_safetensors_metadata(path: Path) -> None:
    """Rewrite the header with __metadata__ keys sorted, in place and at the same length.

    safetensors keeps metadata in a Rust HashMap, so a file with two or more metadata keys comes out
    in a random key order on each save; sorting makes equal inputs give equal bytes. The header is
    only rewritten when re-serialising it unsorted reproduces the original bytes exactly.
    """
    with open(path, "r+b") as handle:
        length = int.from_bytes(handle.read(8), "little")
        raw = handle.read(length)
        text = raw.decode("utf-8").rstrip(" ")  # safetensors pads the header with spaces
        header = json.loads(text, object_pairs_hook=dict)
        dump = lambda obj: json.dumps(obj, separators=(",", ":"), ensure_ascii=False)  # noqa: E731
        if len(header.get("__metadata__") or {}) < 2 or dump(header) != text:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        handle.seek(8)
        handle.write(dump(header).encode("utf-8"))


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` as one safetensors file, atomically; equal inputs give equal bytes.

    Metadata values must be strings. Tensors may live on any device; they are copied to the CPU.
    """
    from safetensors.torch import save_file

    # safetensors wants contiguous CPU tensors that do not share memory with each other.
    plain = {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata=dict(metadata) if metadata is not None else None)
        _sort_safetensors_metadata(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as UTF-8 JSON, atomically (sorted keys, 2-space indent: equal objects, equal bytes)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
