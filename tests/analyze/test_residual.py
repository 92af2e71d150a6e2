"""Residual-stream norms by depth on tiny-llama."""

from __future__ import annotations

import math

import pytest

from rankwise.analyze.residual import residual_norms
from rankwise.errors import DataError
from rankwise.models import load


def test_norms_by_depth_on_tiny_llama():
    model, tokenizer = load("tiny-llama")
    model.train()
    out = residual_norms(model, tokenizer, "Hello there, residual stream.")
    layers = model.config.num_hidden_layers
    assert len(out["norm"]) == len(out["rms"]) == layers + 1
    assert len(out["growth"]) == layers
    assert all(math.isfinite(v) and v > 0 for v in out["norm"] + out["rms"] + out["growth"])
    assert out["growth"][0] == pytest.approx(out["norm"][1] / out["norm"][0])
    assert out["rms"][0] == pytest.approx(out["norm"][0] / math.sqrt(64))
    assert out["tokens"] > 1
    assert model.training  # mode restored


def test_embedding_norm_matches_direct_computation():
    model, tokenizer = load("tiny-llama")
    text = "one two three"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    expected = model.model.embed_tokens(ids)[0].detach().norm(dim=-1).mean()
    assert residual_norms(model, tokenizer, text)["norm"][0] == pytest.approx(float(expected), rel=1e-5)


def test_default_text_and_empty_text():
    model, tokenizer = load("tiny-llama")
    assert residual_norms(model, tokenizer)["tokens"] > 10
    with pytest.raises(DataError):
        residual_norms(model, tokenizer, "   ")
