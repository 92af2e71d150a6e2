"""WeLore: one global threshold over min–max normalised spectra gives each layer its rank (welore_label),
the reduction or the parameter budget is met to within one rank, the ranks are saved in the plan, and
WeLore-PEFT trains the low-rank components' factors alone."""

import json

import pytest
import torch
from torch import nn

import rankwise
from rankwise.analyze.spectra import singular_values, welore_label, welore_tau
from rankwise.compress import LowRankLinear, installed
from rankwise.compress.welore import lrc_paths
from rankwise.errors import ConfigError
from rankwise.io import save_model
from rankwise.models import load

from ..conftest import make_tiny_llama

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: module.weight.detach().clone() for name, module in model.named_modules()
            if name.endswith(PROJECTIONS)}


def test_tau_zero_leaves_the_model_unchanged(tiny_ids):
    model = make_tiny_llama()
    before = _logits(model, tiny_ids)
    with pytest.warns(UserWarning, match="kept every targeted layer"):
        rankwise.compress(model, "welore", tau=0.0)
    assert not any(isinstance(m, LowRankLinear) for m in model.modules()) and installed(model) == []
    assert torch.equal(_logits(model, tiny_ids), before)


@pytest.mark.parametrize("reduction", [0.1, 0.3, 0.5])
def test_the_total_rank_reduction_is_met_within_one_rank_per_matrix(reduction):
    weights = _weights(make_tiny_llama())
    model = rankwise.compress(make_tiny_llama(), "welore", reduction=reduction)
    total = sum(min(W.shape) for W in weights.values())
    kept = sum(model.get_submodule(path).rank for path in weights)  # min_ratio 0: every layer is an LRC
    assert 0 <= (total - kept) - reduction * total <= len(weights)
    ranks = {model.get_submodule(path).rank for path in weights}
    assert len(ranks) > 1  # non-uniform


def test_the_ranks_and_labels_come_from_welore_label_and_the_factors_are_truncated_svds(tiny_ids):
    weights = _weights(make_tiny_llama())
    model = rankwise.compress(make_tiny_llama(), "welore", reduction=0.5, min_ratio=0.5)
    spectra = {path: singular_values(W) for path, W in weights.items()}
    tau = welore_tau(list(spectra.values()), 0.5)
    labels = {path: welore_label(s, tau, min_ratio=0.5) for path, s in spectra.items()}
    assert {label["label"] for label in labels.values()} == {"LRC", "N-LRC"}
    for path, label in labels.items():
        module = model.get_submodule(path)
        if label["label"] == "N-LRC":
            assert type(module) is nn.Linear and torch.equal(module.weight, weights[path])
            continue
        k = label["rank_kept"]
        assert isinstance(module, LowRankLinear) and module.rank == k
        S = torch.tensor(spectra[path], dtype=torch.float64)
        error = torch.linalg.matrix_norm((module.dense_weight() - weights[path]).double())
        torch.testing.assert_close(error, S[k:].square().sum().sqrt(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ratio", [0.4, 0.7])
def test_the_parameter_budget_is_met_within_one_rank_of_one_layer(ratio):
    weights = _weights(make_tiny_llama())
    model = rankwise.compress(make_tiny_llama(), "welore", ratio=ratio)
    budget = ratio * sum(W.numel() for W in weights.values())
    kept, factorized = 0, 0
    for path, W in weights.items():
        module = model.get_submodule(path)
        if isinstance(module, LowRankLinear):
            kept += module.A.numel() + module.B.numel()
            factorized += 1
            assert module.rank * sum(W.shape) < W.numel()  # only layers that save parameters are factorized
        else:
            kept += W.numel()
    assert factorized and budget - max(sum(W.shape) for W in weights.values()) < kept <= budget


def test_an_unreachable_budget_is_refused():
    with pytest.raises(ConfigError, match="cannot keep only"):
        rankwise.compress(make_tiny_llama(), "welore", ratio=0.01)


@pytest.mark.parametrize("fields, match", [
    ({}, "exactly one of"), ({"reduction": 0.5, "tau": 0.1}, "exactly one of"),
    ({"reduction": 1.0}, r"reduction must be in \(0, 1\)"), ({"tau": 1.5}, r"tau must be in \[0, 1\]"),
    ({"reduction": 0.5, "min_ratio": 1.0}, r"min_ratio must be in \[0, 1\)"),
    ({"reduction": 0.5, "rank": 4}, "drop rank="),
])
def test_bad_settings(fields, match):
    with pytest.raises(ConfigError, match=match):
        rankwise.compress(make_tiny_llama(), "welore", **fields)


def test_a_welore_model_folder_loads_back_with_its_per_layer_ranks(tmp_path, tiny_ids, cache):
    model = rankwise.compress(make_tiny_llama(), "welore", reduction=0.5, min_ratio=0.5)
    expected = _logits(model, tiny_ids)
    save_model(model, tmp_path / "m")
    record = json.loads((tmp_path / "m" / "rankwise.json").read_text())["records"][0]
    ranks = {path: model.get_submodule(path).rank for path in record["plan"]}
    assert {path: entry["rank"] for path, entry in record["plan"].items()} == ranks
    loaded, _ = load(str(tmp_path / "m"))
    for path, rank in ranks.items():
        module = loaded.get_submodule(path)
        assert isinstance(module, LowRankLinear) and module.rank == rank
    assert type(loaded.model.layers[0].self_attn.q_proj) is nn.Linear  # an N-LRC at this setting
    assert torch.equal(_logits(loaded, tiny_ids), expected)


def test_lrc_training_changes_only_the_lrc_factors_and_lowers_the_loss(tiny_ids, one_thread):
    """WeLore-PEFT through the adapter machinery: modules_to_save copies of the LRCs, nothing else."""
    model = rankwise.compress(make_tiny_llama(), "welore", reduction=0.5, min_ratio=0.5)
    paths = lrc_paths(model)
    assert paths and all(isinstance(model.get_submodule(p), LowRankLinear) for p in paths)
    rankwise.adapt(model, "lora", targets=[], modules_to_save=paths)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == 2 * len(paths)  # A' and B' of each LRC
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    start = _logits(model, tiny_ids)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(15):
        loss = model(tiny_ids, labels=tiny_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert all(torch.equal(p, frozen[name]) for name, p in model.named_parameters() if name in frozen)
    rankwise.disable(model)  # the compressed model itself is untouched
    assert torch.equal(_logits(model, tiny_ids), start)


def test_lrc_paths_needs_a_welore_compression():
    with pytest.raises(ConfigError, match="no compression named"):
        lrc_paths(make_tiny_llama())
    model = rankwise.compress(make_tiny_llama(), "svd", rank=4)
    with pytest.raises(ConfigError, match="is svd, not welore"):
        lrc_paths(model)
