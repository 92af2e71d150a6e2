"""The GGUF cache: written atomically, safe when two processes convert at once, and faithful."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rankwise.models import embedded, gguf, load


def test_publish_keeps_the_first_complete_folder(tmp_path):
    dest = tmp_path / "model"
    gguf._publish(dest, lambda tmp: (tmp / "weights").write_text("first"))
    gguf._publish(dest, lambda tmp: (tmp / "weights").write_text("second"))  # lost the race
    assert (dest / "weights").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind


def test_failed_write_publishes_nothing(tmp_path):
    dest = tmp_path / "model"

    def crash(tmp):
        (tmp / "half").write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        gguf._publish(dest, crash)
    assert list(tmp_path.iterdir()) == []


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path))
    assert gguf.cache_root() == tmp_path
    monkeypatch.delenv("RANKWISE_CACHE")
    assert gguf.cache_root().name == "rankwise"


@pytest.mark.slow
def test_two_processes_converting_at_once_both_succeed(tmp_path):
    code = ("from rankwise.models import embedded, gguf; "
            "print(gguf.ensure_tokenizer(embedded.package_file('smollm2-135m')))")
    env = dict(os.environ, RANKWISE_CACHE=str(tmp_path), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1]
    folders = list((tmp_path / "gguf").iterdir())
    assert len(folders) == 1 and [p.name for p in folders[0].iterdir()] == ["tokenizer"]
    assert (folders[0] / "tokenizer" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_cached_smollm2_matches_the_direct_gguf_load():
    """Uses the real cache (~/.cache/rankwise or $RANKWISE_CACHE): converted once, reused by every run."""
    torch.set_num_threads(2)
    cached, tokenizer = load("smollm2-135m")
    assert not hasattr(cached.config, "quantization_config")
    direct, direct_tokenizer = gguf.load_gguf_direct(embedded.package_file("smollm2-135m"))
    text = "Convert the date to ISO format: March 5, 2021"
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    assert ids.tolist() == [direct_tokenizer(text)["input_ids"]]
    with torch.no_grad():
        assert torch.equal(cached(ids).logits, direct(ids).logits)
    assert tokenizer.chat_template == direct_tokenizer.chat_template
