"""TRP: the rank rules and the two training steps checked against direct SVDs, training that lowers the
nuclear norm, and the final factorization (exact at full rank, saved with its chosen ranks)."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import StepContext
from rankwise.compress import LowRankLinear
from rankwise.compress.trp import TrainedRankPruning, energy_factors, nuclear_subgradient, project
from rankwise.errors import ConfigError, TargetError
from rankwise.io import save_model
from rankwise.linalg.rank_selection import energy_rank, threshold_rank
from rankwise.models import load

from ..conftest import make_tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _weight(seed=0, shape=(24, 16)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_energy_rank_is_the_smallest_rank_reaching_the_share_and_grows_with_it():
    S = torch.linalg.svdvals(_weight())
    shares = (S.double().square().cumsum(0) / S.double().square().sum()).tolist()
    ranks = []
    for e in torch.linspace(0.05, 1.0, 40).tolist():
        k = energy_rank(S, e)
        assert shares[k - 1] >= e - 1e-12 and (k == 1 or shares[k - 2] < e)  # the smallest such k
        ranks.append(k)
    assert ranks == sorted(ranks) and ranks[-1] == 16
    assert threshold_rank(S, float(S[3])) == 4 and threshold_rank(S, 1e9) == 1  # never rank 0


def test_the_subgradient_is_u_k_v_k_t_and_the_projection_has_rank_k():
    W = _weight(1)
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    k = energy_rank(S, 0.9)
    assert 1 < k < 16
    factors = energy_factors(W, 0.9)
    G = nuclear_subgradient(factors)
    torch.testing.assert_close(G.double(), U[:, :k] @ Vh[:k], atol=1e-5, rtol=0)
    P = project(factors)
    assert torch.linalg.matrix_rank(P) == k
    # a subgradient of ‖·‖_* at P: spectral norm 1 and <G, P> = ‖P‖_*
    torch.testing.assert_close(torch.linalg.matrix_norm(G, 2), torch.tensor(1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close((G * P).sum().double(), S[:k].sum(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(torch.linalg.matrix_norm((W - P).double()), S[k:].square().sum().sqrt(),
                               atol=1e-4, rtol=1e-5)  # Eckart–Young


def test_steps_act_only_on_the_period_and_take_a_step_context():
    model = nn.Sequential(nn.Linear(16, 24))
    trp = TrainedRankPruning(model, energy=0.8, period=5, nuclear_weight=0.1)
    W = model[0].weight.detach().clone()
    trp.after_step(3)
    assert torch.equal(model[0].weight, W)
    trp.after_step(StepContext(step=5))
    k = energy_rank(torch.linalg.svdvals(W), 0.8)
    assert torch.linalg.matrix_rank(model[0].weight.detach()) == k
    model[0].weight.grad = torch.zeros_like(W)
    trp.after_backward(4)
    assert not model[0].weight.grad.any()
    trp.after_backward(5)  # the factors of the step-5 projection: 0.1 U_k V_kᵀ
    U, _, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    torch.testing.assert_close(model[0].weight.grad.double(), 0.1 * U[:, :k] @ Vh[:k], atol=1e-5, rtol=0)


def _train(trp_settings: dict | None, steps=30):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 24), nn.Tanh(), nn.Linear(24, 3))
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trp = TrainedRankPruning(model, targets=["0", "2"], **trp_settings) if trp_settings is not None else None
    for step in range(steps):
        nn.functional.cross_entropy(model(x), y).backward()
        if trp:
            trp.after_backward(step)
        optimizer.step()
        optimizer.zero_grad()
        if trp:
            trp.after_step(step + 1)
    return sum(torch.linalg.matrix_norm(model[i].weight.detach(), "nuc") for i in (0, 2))


def test_trp_training_lowers_the_nuclear_norm_against_plain_training():
    plain = _train(None)
    assert _train({"period": 5}) < plain  # projection + the paper's λ
    assert _train({"projection": False, "nuclear_weight": 0.05, "period": 1}) < plain  # the regulariser alone


def test_the_compressor_at_full_rank_reproduces_the_model(tiny_ids):
    base = _logits(make_tiny_llama(), tiny_ids)
    model = rankwise.compress(make_tiny_llama(), "trp", energy=1.0, targets=["k_proj", "up_proj"])
    k, up = model.model.layers[0].self_attn.k_proj, model.model.layers[0].mlp.up_proj
    assert isinstance(k, LowRankLinear) and (k.rank, up.rank) == (16, 32)
    torch.testing.assert_close(_logits(model, tiny_ids), base, atol=1e-5, rtol=1e-5)


def test_the_value_threshold_rule_and_its_ranks_survive_a_save(tmp_path, tiny_ids, cache):
    reference = make_tiny_llama()
    q = reference.model.layers[1].self_attn.q_proj
    S = torch.linalg.svdvals(q.weight.detach())
    model = rankwise.compress(make_tiny_llama(), "trp", threshold=float(S[10]),
                              targets=["q_proj", "down_proj"])
    assert model.model.layers[1].self_attn.q_proj.rank == 11  # σ_i >= threshold: i < 11
    expected = _logits(model, tiny_ids)
    save_model(model, tmp_path / "m")
    loaded, _ = load(str(tmp_path / "m"))
    for path in ("model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj"):
        assert loaded.get_submodule(path).rank == model.get_submodule(path).rank
    assert torch.equal(_logits(loaded, tiny_ids), expected)


@pytest.mark.parametrize("fields, error, match", [
    ({"energy": 0.9, "rank": 4}, ConfigError, "one of threshold=, energy= or rank="),
    ({"energy": 1.5}, ConfigError, r"energy must be in \(0, 1\]"),
    ({"threshold": -1.0}, ConfigError, "threshold must be"),
    ({"rank": 17, "targets": ["k_proj"]}, ConfigError, r"k_proj: rank 17 exceeds min\(out, in\) = 16"),
])
def test_bad_settings_are_rejected_and_leave_the_model_unchanged(fields, error, match, tiny_ids):
    model = make_tiny_llama()
    before = _logits(model, tiny_ids)
    with pytest.raises(error, match=match):
        rankwise.compress(model, "trp", **fields)
    assert torch.equal(_logits(model, tiny_ids), before)


def test_trainer_settings_are_checked():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.raises(ConfigError, match="period"):
        TrainedRankPruning(model, period=0)
    with pytest.raises(TargetError, match="1 is a LayerNorm"):
        TrainedRankPruning(model, targets=["0", "1"])
