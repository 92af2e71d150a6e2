"""Atomic writes: a failed write never replaces the old content, and leaves no temporaries behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rankwise.errors import AdapterFileError
from rankwise.io import atomic as atomic_module
from rankwise.io import atomic_directory, atomic_path, load_tensors, read_json, save_tensors, write_json
from rankwise.io.atomic import check_writable


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_atomic_path_replaces_file_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_path_failure_keeps_old_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_path_with_nothing_written_raises_and_keeps_old(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(target):
            pass
    assert target.read_text() == "old"


def test_writes_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_json(tmp_path / "a.json", {"x": 1})
    assert len(synced) >= 2  # the file, then its directory (so the rename survives power loss)


def test_save_tensors_and_write_json_are_deterministic(tmp_path):
    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4, dtype=torch.bfloat16)}
    for run in ("1", "2"):
        save_tensors(tmp_path / f"t{run}.safetensors", tensors, {"format": "pt"})
        write_json(tmp_path / f"j{run}.json", {"z": [1, 2], "a": {"k": 0.5}})
    assert (tmp_path / "t1.safetensors").read_bytes() == (tmp_path / "t2.safetensors").read_bytes()
    assert (tmp_path / "j1.json").read_bytes() == (tmp_path / "j2.json").read_bytes()
    loaded, metadata = load_tensors(tmp_path / "t1.safetensors")
    assert metadata == {"format": "pt"}
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert read_json(tmp_path / "j1.json") == {"z": [1, 2], "a": {"k": 0.5}}


def test_write_json_refuses_nan_and_keeps_old(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(ValueError):
        write_json(tmp_path / "a.json", {"x": float("nan")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}


@pytest.mark.parametrize("exchange_supported", [True, False])
def test_atomic_directory_swaps_whole_directory(tmp_path, monkeypatch, exchange_supported):
    if not exchange_supported:
        monkeypatch.setattr(atomic_module, "_exchange", lambda a, b: False)
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "stale.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_atomic_directory_creates_missing_target(tmp_path):
    with atomic_directory(tmp_path / "deep" / "new") as tmp:
        (tmp / "x").write_text("1")
    assert (tmp_path / "deep" / "new" / "x").read_text() == "1"


def test_atomic_directory_failure_keeps_old_content(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "good.txt").write_text("good")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(target) as tmp:
            (tmp / "good.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["good.txt"]
    assert (target / "good.txt").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_atomic_directory_refuses_a_file_target(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(AdapterFileError, match="is not a directory"), atomic_directory(tmp_path / "f"):
        pass
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_a_read_only_folder_is_one_named_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(AdapterFileError, match=r"cannot write .*ro.*Permission denied"):
            save_tensors(folder / "x.safetensors", {"a": torch.zeros(2)})
    finally:
        folder.chmod(0o700)


def test_a_path_under_a_file_and_a_full_disk_are_one_named_error(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(AdapterFileError, match=r"cannot write .*f/x.json"):
        write_json(tmp_path / "f" / "x.json", {})
    with pytest.raises(AdapterFileError, match=r"cannot write .*under"):
        check_writable(tmp_path / "f" / "under")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    write_json(tmp_path / "kept.json", {"old": 1})
    monkeypatch.setattr("os.replace", full)
    with pytest.raises(AdapterFileError, match="No space left on device.*Nothing saved there before"):
        write_json(tmp_path / "kept.json", {"new": 2})
    assert json.loads((tmp_path / "kept.json").read_text()) == {"old": 1}


def test_stale_temporaries_of_dead_processes_are_cleaned(tmp_path):
    pid = _dead_pid()
    target = tmp_path / "ckpt"
    target.mkdir()
    stale = tmp_path / f".ckpt.tmp-{pid}-abcd1234"
    stale.mkdir()
    (stale / "half").write_text("x")
    other = tmp_path / f".other.tmp-{pid}-abcd1234"  # another target's temporary: not ours to touch
    other.mkdir()
    with atomic_directory(target) as tmp:
        (tmp / "x").write_text("1")
    assert not stale.exists() and other.exists()


def test_only_copy_left_by_a_crash_mid_swap_is_restored(tmp_path):
    # A process killed between the fallback's two renames leaves no target, only `.ckpt.old-*`.
    pid = _dead_pid()
    old = tmp_path / f".ckpt.old-{pid}-abcd1234"
    old.mkdir()
    (old / "weights").write_text("the only good copy")
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "ckpt"):
            raise RuntimeError("interrupted again")
    assert (tmp_path / "ckpt" / "weights").read_text() == "the only good copy"
