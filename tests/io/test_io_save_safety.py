"""A failed or killed save never replaces a good adapter with a half-written one."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import rankwise.io.adapter_file as adapter_file
from rankwise.errors import AdapterFileError
from rankwise.io import load_adapter, save_adapter

from .io_helpers import adapted_llama, file_bytes, logits, make_tiny_llama


@pytest.fixture
def good(tmp_path, tiny_ids):
    """(directory holding a good adapter, its bytes, its outputs)."""
    directory = tmp_path / "adapter"
    model = adapted_llama("lora")
    save_adapter(model, directory)
    return directory, file_bytes(directory), logits(model, tiny_ids)


def _assert_intact(good, tiny_ids) -> None:
    directory, old_bytes, old_logits = good
    assert file_bytes(directory) == old_bytes
    assert torch.equal(logits(load_adapter(make_tiny_llama(), directory), tiny_ids), old_logits)
    assert sorted(p.name for p in directory.parent.iterdir()) == [directory.name], "temporaries left behind"


def test_failure_while_writing_tensors_keeps_old_adapter(good, monkeypatch, tiny_ids):
    def write_half_then_fail(path, tensors, metadata=None):
        Path(path).write_bytes(b"\x00" * 100)  # a partial file where the real one would go
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(adapter_file, "save_tensors", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_adapter(adapted_llama("dora", seed=0), good[0])
    _assert_intact(good, tiny_ids)


def test_failure_while_writing_json_keeps_old_adapter(good, monkeypatch, tiny_ids):
    def fail(path, obj):
        raise TypeError("Object of type Tensor is not JSON serializable")

    monkeypatch.setattr(adapter_file, "write_json", fail)
    with pytest.raises(TypeError):
        save_adapter(adapted_llama("rslora", seed=0), good[0])
    _assert_intact(good, tiny_ids)


def test_failure_inside_safetensors_keeps_old_adapter(good, monkeypatch, tiny_ids):
    import safetensors.torch

    def explode(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("I/O error")

    monkeypatch.setattr(safetensors.torch, "save_file", explode)
    with pytest.raises(RuntimeError, match="I/O error"):
        save_adapter(adapted_llama("pissa", seed=0), good[0])
    _assert_intact(good, tiny_ids)


@pytest.mark.slow  # starts a second Python process
def test_killed_save_keeps_old_adapter_and_next_save_cleans_up(good, tiny_ids):
    directory = good[0]
    repo_root = Path(__file__).resolve().parents[2]
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(repo_root)!r})
        import rankwise.io.adapter_file as adapter_file
        from tests.io.io_helpers import adapted_llama
        def die(path, tensors, metadata=None):
            open(path, "wb").write(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        adapter_file.save_tensors = die
        adapter_file.save_adapter(adapted_llama("dora"), {str(directory)!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    leftovers = [p for p in directory.parent.iterdir() if p != directory]
    assert leftovers, "the killed process should have left its temporary directory"
    assert file_bytes(directory) == good[1]

    save_adapter(adapted_llama("lora", seed=0), directory)  # the next save tidies the dead temporary
    assert sorted(p.name for p in directory.parent.iterdir()) == [directory.name]


def test_save_refuses_a_directory_with_other_files(tmp_path):
    directory = tmp_path / "my_project"
    directory.mkdir()
    (directory / "train.py").write_text("precious")
    with pytest.raises(AdapterFileError, match="holds other files \\(train.py\\)"):
        save_adapter(adapted_llama("lora"), directory)
    assert (directory / "train.py").read_text() == "precious"


def test_save_replaces_peft_files_with_rankwise_files(tmp_path):
    directory = tmp_path / "a"
    save_adapter(adapted_llama("lora"), directory, format="peft")
    save_adapter(adapted_llama("lora"), directory)
    assert sorted(p.name for p in directory.iterdir()) == ["adapter.json", "adapter.safetensors"]


def test_hidden_files_count_as_other_files(tmp_path):
    directory = tmp_path / "repo"
    directory.mkdir()
    (directory / ".git").mkdir()
    with pytest.raises(AdapterFileError, match="holds other files \\(.git\\)"):
        save_adapter(adapted_llama("lora"), directory)
    assert (directory / ".git").is_dir()
