"""Shared fixtures: tiny random models built in milliseconds, seeded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rankwise.models import embedded, gguf

TINY_VOCAB = 64


def make_tiny_llama(seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_llama() -> LlamaForCausalLM:
    return make_tiny_llama()


@pytest.fixture
def tiny_ids() -> torch.Tensor:
    return torch.randint(0, TINY_VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))


# A per-session RANKWISE_CACHE holding SmolLM2's tokenizer, so tiny-llama loads in milliseconds.
@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("rankwise-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RANKWISE_CACHE", str(root))
        gguf.ensure_tokenizer(embedded.package_file("smollm2-135m"))  # ~5 s once, then cached
    return root


@pytest.fixture
def cache(session_cache, monkeypatch):
    monkeypatch.setenv("RANKWISE_CACHE", str(session_cache))
    return session_cache


@pytest.fixture
def one_thread():
    """Tiny matmuls gain nothing from threads, and lose a lot when the CPUs are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def leave_process_group() -> None:
    """The end of a torchrun worker: wait for the other process, then close the process group. Exiting
    with gloo's threads still running can abort the process ("terminate called without an active
    exception"), seen once under heavy load."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_two_processes(module: str, out: Path, timeout: int = 600) -> None:
    """`python -m module OUT` on 2 CPU processes under torchrun (one thread each); fails with its output."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", module, str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
