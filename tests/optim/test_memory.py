"""memory_report: sizes measured from the tensors held, against hand counts and the analytic formula."""

import pytest
import torch
from torch import nn

from rankwise.optim import build_optimizer, format_memory, memory_report, trainer_optimizer

from ..conftest import TINY_VOCAB, make_tiny_llama


class Tied(nn.Module):
    """A (10, 6) weight with a bias, an embedding tied to it, a persistent and a non-persistent buffer."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.linear = nn.Linear(6, 10, dtype=dtype)
        self.embed = nn.Embedding(10, 6, dtype=dtype)
        self.embed.weight = self.linear.weight
        self.register_buffer("counts", torch.zeros(3, dtype=torch.int64))
        self.register_buffer("cache", torch.zeros(100), persistent=False)

    def forward(self, x):
        return self.linear(x).square().sum()


def _one_step(model, optimizer, inputs):
    model(inputs).backward()
    optimizer.step()


def test_weights_count_tied_tensors_once_and_skip_non_persistent_buffers():
    report = memory_report(Tied())
    # weight 60 + bias 10 floats (the embedding is the same tensor), 3 int64 counts; no cache
    assert report["weights"] == {"elements": 73, "bytes": 70 * 4 + 3 * 8}
    assert report["gradients"] == {"elements": 0, "bytes": 0}
    assert report["optimizer"] is None and report["expected"] is None
    assert report["total"] == report["weights"]


@pytest.mark.parametrize("kind, basis_bytes", [("galore", 6 * 3 * 4), ("random", 6 * 3 * 4), ("dct", 3 * 8)])
@pytest.mark.parametrize("transpose", [False, True])
def test_projected_state_matches_a_hand_count(kind, basis_bytes, transpose):
    model = Tied()
    if transpose:  # a wide (6, 10) weight: the moments are r×n instead of m×r, same size here by symmetry
        model.linear, model.embed = nn.Linear(10, 6), nn.Embedding(6, 10)
        model.embed.weight = model.linear.weight
    optimizer = build_optimizer(kind, model.parameters(), lr=1e-2, rank=3)
    _one_step(model, optimizer, torch.randn(4, model.linear.in_features))
    report = memory_report(model, optimizer)
    bias = model.linear.bias.numel()
    moments = (2 * 10 * 3 + 2 * bias) * 4  # a 10×3 (or 3×10) low-rank moment pair; the bias plain
    assert report["optimizer"]["moments"]["bytes"] == moments
    assert report["optimizer"]["bases"]["bytes"] == basis_bytes
    assert report["optimizer"]["other"]["bytes"] == 0  # ProjectedAdamW's step is a Python int
    assert report["expected"] == {"optimizer_class": "ProjectedAdamW", **report["optimizer"]}
    assert report["gradients"]["bytes"] == (60 + bias) * 4


@pytest.mark.parametrize("name, options", [
    ("adamw", {}), ("sgd", {"momentum": 0.9}), ("sgd", {}), ("galore", {"rank": 2}), ("dct", {"rank": 2}),
    ("random", {"rank": 2}), ("galore", {"rank": 200}),  # rank above every dimension: all plain AdamW
    ("gradnorm-lorp", {"rank": 2}),
])
def test_measured_state_equals_the_formula_after_one_step(name, options):
    model = make_tiny_llama().train()
    optimizer = trainer_optimizer(model, name, lr=1e-3, **options)
    ids = torch.randint(0, TINY_VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    report = memory_report(model, optimizer)
    expected = {key: value for key, value in report["expected"].items() if key != "optimizer_class"}
    assert report["optimizer"] == expected
    params = sum(p.numel() for p in model.parameters())
    if name == "gradnorm-lorp":  # the formula check above is the point; its V and g are extra state
        return
    plain = {"adamw": 2 * params, "sgd": params if options else 0, "galore": 2 * params}
    if name in {"adamw", "sgd"} or options["rank"] == 200:
        assert report["optimizer"]["moments"]["elements"] == plain[name]
        assert report["optimizer"]["bases"]["elements"] == 0
    else:  # fewer moments than plain AdamW, plus one basis per projected block matrix: per layer q, o,
        # gate, up, down have d = 32 and k, v (2 of 4 heads, 16×32) d = 16; dct keeps 2 indices each
        assert report["optimizer"]["moments"]["elements"] < 2 * params
        bases = 14 * 2 if name == "dct" else 2 * (5 * 32 + 2 * 16) * 2
        assert report["optimizer"]["bases"]["elements"] == bases
    assert report["total"]["bytes"] == sum(report[k]["bytes"] for k in ("weights", "gradients")) + \
        report["optimizer"]["total"]["bytes"]


def test_float64_weights_keep_a_float64_basis():
    model = Tied(torch.float64)
    optimizer = build_optimizer("galore", model.parameters(), lr=1e-2, rank=3)
    _one_step(model, optimizer, torch.randn(4, 6, dtype=torch.float64))
    report = memory_report(model, optimizer)
    assert report["optimizer"]["bases"]["bytes"] == 6 * 3 * 8
    assert report["expected"]["total"] == report["optimizer"]["total"]


def test_amsgrad_and_unknown_optimizers():
    model = Tied()
    adam = torch.optim.Adam(model.parameters(), amsgrad=True)
    _one_step(model, adam, torch.randn(4, 6))
    report = memory_report(model, adam)
    assert report["optimizer"]["moments"]["elements"] == 3 * 70
    assert report["optimizer"]["other"] == {"elements": 2, "bytes": 8}  # one step scalar per parameter
    assert report["expected"]["total"] == report["optimizer"]["total"]
    rmsprop = torch.optim.RMSprop(model.parameters())
    _one_step(model, rmsprop, torch.randn(4, 6))
    assert memory_report(model, rmsprop)["expected"] is None


def test_format_memory_lists_each_section():
    model = Tied()
    optimizer = build_optimizer("dct", model.parameters(), lr=1e-2, rank=3)
    _one_step(model, optimizer, torch.randn(4, 6))
    text = format_memory(memory_report(model, optimizer))
    labels = [line[:28].strip() for line in text.splitlines()]
    assert labels == ["weights", "gradients", "optimizer state", "moments", "bases",
                      "expected (ProjectedAdamW)", "moments", "bases", "total"]
    assert "304 B  (73 elements)" in text.splitlines()[0]
