"""Gradient spectra: the math (erank, AUC), the bookkeeping on tiny-llama, and clean vs shuffled answers."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rankwise.analyze.gradients import auc, gradient_spectra, rank_examples
from rankwise.analyze.spectra import effective_rank
from rankwise.data import encode_example
from rankwise.errors import DataError
from rankwise.models import load


def test_auc():
    assert auc([3, 4], [1, 2]) == 1.0
    assert auc([1], [1]) == 0.5
    assert auc([1, 2], [2, 3]) == pytest.approx(0.125)


def test_spectra_on_tiny_llama_shapes_and_state_restored():
    model, tokenizer = load("tiny-llama")
    model.train()
    model.model.embed_tokens.weight.requires_grad_(True)
    model.model.layers[0].self_attn.q_proj.weight.requires_grad_(False)
    examples = [{"prompt": "Say hi", "answer": "hi"}, {"prompt": "Add 2 and 3", "answer": "5"}]
    out = gradient_spectra(model, tokenizer, examples, progress=False)
    assert len(out["layers"]) == 2 * 7  # q, k, v, o, gate, up, down per layer; no lm_head
    assert len(out["examples"]) == 2
    for row in out["examples"]:
        assert len(row["nuclear_norm"]) == len(row["effective_rank"]) == len(out["layers"])
        assert all(math.isfinite(v) and v > 0
                   for v in row["nuclear_norm"] + row["effective_rank"] + [row["loss"]])
    for key in ("nuclear_norm", "effective_rank"):
        assert out["mean"][key][0] == pytest.approx(sum(r[key][0] for r in out["examples"]) / 2)
    # flags and mode restored, nothing accumulated
    assert model.training
    assert model.model.embed_tokens.weight.requires_grad
    assert not model.model.layers[0].self_attn.q_proj.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_spectra_attention_targets_only():
    model, tokenizer = load("tiny-llama")
    out = gradient_spectra(model, tokenizer, [{"prompt": "a", "answer": "b"}], targets=["q_proj", "o_proj"],
                           progress=False)
    assert [n.rpartition(".")[2] for n in out["layers"]] == ["q_proj", "o_proj"] * 2


def test_example_without_answer_tokens_is_rejected():
    model, _ = load("tiny-llama")
    with pytest.raises(DataError, match="no answer tokens"):
        gradient_spectra(model, None, [{"input_ids": [1, 2], "labels": [-100, -100]}], progress=False)


VOCAB, SEP = 12, 1


def _trained_rule_model():
    """A tiny Llama trained (60 full-batch steps, well under a second) on: [a, b, SEP] -> [π(b), π(a)]."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)
    model = LlamaForCausalLM(config)
    perm = (torch.randperm(VOCAB - 2) + 2).tolist()
    pairs = [[a, b] for a in range(2, VOCAB) for b in range(2, VOCAB)]

    def answer(x):
        return [perm[x[1] - 2], perm[x[0] - 2]]

    ids = torch.tensor([x + [SEP] + answer(x) for x in pairs])
    labels = ids.clone()
    labels[:, :3] = -100
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(60):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), pairs, answer


def test_gradient_metrics_separate_clean_from_shuffled_answers():
    model, pairs, answer = _trained_rule_model()
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(1))[:24].tolist()
    prompts = [pairs[i] for i in order]
    clean_answers = [answer(x) for x in prompts[:12]]
    wrong = [answer(x) for x in prompts[12:]]
    wrong = wrong[1:] + wrong[:1]  # a derangement: every second-half prompt gets another one's answer

    def encode(x, y):
        return {"input_ids": x + [SEP] + y, "labels": [-100] * 3 + y}

    examples = [encode(x, y) for x, y in zip(prompts, clean_answers + wrong)]
    spectra = gradient_spectra(model, None, examples, progress=False)
    aucs = {}
    for by in ("nuclear_norm", "effective_rank"):
        scores = {r["index"]: r["score"]
                  for r in rank_examples(model, None, examples, by=by, spectra=spectra)}
        aucs[by] = auc([scores[i] for i in range(12)], [scores[i] for i in range(12, 24)])
    print("AUC clean vs shuffled:", aucs)
    # higher score = cleaner; the nuclear norm is the sharp signal here (1.0 in our runs)
    assert aucs["nuclear_norm"] > 0.9


def test_factored_spectra_equal_dense_weight_gradient_svd():
    model, tokenizer = load("tiny-llama")
    example = {"prompt": "Name a colour", "answer": "A fairly long answer: blue, like the sky at noon."}
    fast = gradient_spectra(model, tokenizer, [example], progress=False)["examples"][0]
    enc = {k: torch.tensor([v]) for k, v in encode_example(tokenizer, example, 1024).items()}
    weight = model.model.layers[1].mlp.down_proj.weight
    (g,) = torch.autograd.grad(model(**enc).loss, [weight])
    s = torch.linalg.svdvals(g)
    assert fast["nuclear_norm"][-1] == pytest.approx(float(s.sum()), rel=1e-4)
    assert fast["effective_rank"][-1] == pytest.approx(effective_rank(s.tolist()), rel=1e-3)
    assert weight.grad is None
