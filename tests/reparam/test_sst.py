"""SST W = U diag(σ) Vh: the SVD init leaves the model unchanged; only the selected pairs' vectors (and
every σ) are parameters, so the optimizer holds state for r (out + in) + k numbers; their gradients are
the enhanced ones (∂L/∂W) v_i and u_iᵀ (∂L/∂W), checked against autograd on the dense W; pairs are drawn
with p_i ∝ σ_i; a round re-orthogonalizes without changing W, resamples from (seed, round, layer) and
resets the optimizer state; saved models load back identically."""

import pytest
import torch

import rankwise
from rankwise.errors import ConfigError
from rankwise.io import save_model
from rankwise.models import load
from rankwise.reparam.sst import (
    SpectralLinear,
    SstSchedule,
    round_generator,
    sample_pairs,
    selection_probabilities,
)

from ..conftest import TINY_VOCAB, make_tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


def _sst_llama(**fields):
    return rankwise.reparametrize(make_tiny_llama(), "sst", rank=4, **fields)


def _spectral(model):
    return {path: m for path, m in model.named_modules() if isinstance(m, SpectralLinear)}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _loss(model, ids):
    return model(ids, labels=ids).loss


def _train(model, ids, optimizer, steps, schedule=None, first=1):
    for step in range(first, first + steps):
        _loss(model, ids).backward()
        optimizer.step()
        optimizer.zero_grad()
        if schedule is not None:
            schedule.after_step(step, optimizer)


def _unselected(module):
    mask = torch.ones(module.spectral_rank, dtype=torch.bool)
    mask[module.selected] = False
    return mask


def test_svd_init_leaves_the_logits_unchanged_and_selects_rank_pairs(tiny_ids):
    base = _logits(make_tiny_llama(), tiny_ids)
    model = _sst_llama()
    torch.testing.assert_close(_logits(model, tiny_ids), base, atol=1e-5, rtol=1e-5)
    layers = _spectral(model)
    assert len(layers) == 14
    k_proj = layers["model.layers.0.self_attn.k_proj"]  # (16, 32): k = 16
    assert k_proj.U.shape == (16, 16) and k_proj.S.shape == (16,) and k_proj.Vh.shape == (16, 32)
    assert k_proj.U_selected.shape == (16, 4) and k_proj.Vh_selected.shape == (4, 32)
    for module in layers.values():
        U, S, Vh = module.spectrum()
        eye = torch.eye(module.spectral_rank)
        torch.testing.assert_close(U.T @ U, eye, atol=1e-5, rtol=0)
        torch.testing.assert_close(Vh @ Vh.T, eye, atol=1e-5, rtol=0)
        assert (S[:-1] >= S[1:]).all() and (S >= 0).all()
        assert module.selected.numel() == 4 and torch.equal(module.selected, module.selected.unique())
        assert not module.U[:, module.selected].any() and not module.Vh[module.selected].any()
        assert set(dict(module.named_buffers())) == {"U", "Vh", "selected"}  # saved, never trained


def test_only_the_selected_vectors_and_every_singular_value_train(tiny_ids):
    model = _sst_llama()
    layers = _spectral(model)
    trained = {name for name, p in model.named_parameters() if "layers.0.self_attn.q_proj" in name}
    assert trained == {f"model.layers.0.self_attn.q_proj.{n}" for n in ("S", "U_selected", "Vh_selected")}
    # The optimizer holds state for r (out + in) + k numbers per layer, not k (out + in + 1).
    expected = sum(4 * (m.out_features + m.in_features) + m.spectral_rank for m in layers.values())
    assert sum(p.numel() for m in layers.values() for p in m.parameters()) == expected
    before = {path: tuple(t.detach().clone() for t in m.spectrum()) for path, m in layers.items()}
    _loss(model, tiny_ids).backward()
    for module in layers.values():
        assert module.U_selected.grad.abs().sum(0).gt(0).all()
        assert module.Vh_selected.grad.abs().sum(1).gt(0).all()
        assert module.S.grad.ne(0).all()
    torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1).step()
    for path, module in layers.items():
        (U, S, Vh), (new_U, new_S, new_Vh) = before[path], module.spectrum()
        off = _unselected(module)
        assert torch.equal(new_U[:, off], U[:, off]) and torch.equal(new_Vh[off], Vh[off])
        assert new_U[:, ~off].ne(U[:, ~off]).any(0).all() and new_Vh[~off].ne(Vh[~off]).any(1).all()
        assert new_S.ne(S).all()


def test_the_enhanced_gradient_is_the_dense_gradient_without_sigma(tiny_ids):
    model = make_tiny_llama().double()  # float64: an exact comparison of two computations
    rankwise.reparametrize(model, "sst", rank=4)
    layers = _spectral(model)
    dense = make_tiny_llama().double()  # the same model with each W = U diag(σ) Vh as a dense leaf
    with torch.no_grad():
        for path, module in layers.items():
            dense.get_submodule(path).weight.copy_(module.dense_weight())
    torch.testing.assert_close(_logits(model, tiny_ids), _logits(dense, tiny_ids))
    _loss(model, tiny_ids).backward()
    _loss(dense, tiny_ids).backward()
    for path, module in layers.items():
        G = dense.get_submodule(path).weight.grad  # ∂L/∂W
        U, S, Vh = (t.detach() for t in module.spectrum())
        chosen = module.selected
        torch.testing.assert_close(module.U_selected.grad, G @ Vh[chosen].T)  # column i: G v_i
        torch.testing.assert_close(module.Vh_selected.grad, U[:, chosen].T @ G)  # row i: u_iᵀ G
        torch.testing.assert_close(module.S.grad, torch.diagonal(U.T @ G @ Vh.T))  # u_iᵀ G v_i, all i
        # The chain rule on W(U, σ, Vh) would carry σ_i; the enhanced gradient drops it.
        U_leaf = U.clone().requires_grad_()
        ((U_leaf * S) @ Vh * G).sum().backward()
        torch.testing.assert_close(U_leaf.grad[:, chosen], module.U_selected.grad * S[chosen])


def test_pairs_are_drawn_without_replacement_with_probability_proportional_to_sigma():
    sigma = torch.tensor([8.0, 4.0, 2.0, 1.0, 1.0, 0.5, 0.25, 0.25])
    torch.testing.assert_close(selection_probabilities(sigma), sigma.double() / sigma.sum())
    generator = torch.Generator().manual_seed(0)
    draws = 4000
    counts = torch.bincount(torch.cat([sample_pairs(sigma, 1, generator) for _ in range(draws)]),
                            minlength=8).double()
    expected = draws * selection_probabilities(sigma)
    chi_square = ((counts - expected) ** 2 / expected).sum().item()
    assert chi_square < 24.32  # the 0.999 quantile of χ² with 7 degrees of freedom
    # Without replacement, σ = (2, 1, 1), two draws: P(0 kept) = 1 − 2·(1/4)(1/3) = 5/6 and
    # P(1 kept) = 1 − (1/2)(1/2) − (1/4)(2/3) = 7/12.
    pairs = torch.stack([sample_pairs(torch.tensor([2.0, 1.0, 1.0]), 2, generator) for _ in range(3000)])
    assert all(row[0] < row[1] for row in pairs.tolist())  # distinct and sorted
    kept = torch.stack([(pairs == i).any(1) for i in range(3)], 1).double().mean(0)
    exact = torch.tensor([5 / 6, 7 / 12], dtype=torch.float64)
    torch.testing.assert_close(kept[:2], exact, atol=0.03, rtol=0)  # ~4 standard errors at 3000 draws
    # A zero σ is drawn only when fewer than r singular values are positive; r = k keeps every pair.
    for _ in range(20):
        pick = sample_pairs(torch.tensor([3.0, 0.0, 0.0, 1.0]), 3, generator).tolist()
        assert 0 in pick and 3 in pick and len(set(pick)) == 3
    assert sample_pairs(sigma, 8, generator).tolist() == list(range(8))


def test_a_round_reorthogonalizes_keeps_w_resamples_from_the_seed_and_resets_the_state(tiny_ids):
    model = _sst_llama(round_length=3, seed=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2, weight_decay=0.0)
    schedule = SstSchedule(model)
    _train(model, tiny_ids, optimizer, steps=3)
    layers = _spectral(model)
    q = layers["model.layers.0.self_attn.q_proj"]
    U = q.spectrum()[0].detach()
    assert (U.T @ U - torch.eye(32)).abs().max() > 1e-4  # training moved U off orthogonality
    dense = {path: m.dense_weight().detach().clone() for path, m in layers.items()}
    logits = _logits(model, tiny_ids)
    spectral = {id(p) for m in layers.values() for p in (m.U_selected, m.S, m.Vh_selected)}
    state = {p: {k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()}

    assert schedule.after_step(2, optimizer) == ()
    torch.manual_seed(123)  # the global RNG must not matter
    assert schedule.after_step(3, optimizer) == ("redecompose", "resample", "reset")

    torch.testing.assert_close(_logits(model, tiny_ids), logits, atol=1e-5, rtol=1e-5)
    for path, module in layers.items():
        U, S, Vh = (t.detach() for t in module.spectrum())
        eye = torch.eye(module.spectral_rank)
        torch.testing.assert_close(U.T @ U, eye, atol=1e-5, rtol=0)
        torch.testing.assert_close(Vh @ Vh.T, eye, atol=1e-5, rtol=0)
        assert (S >= 0).all()
        torch.testing.assert_close(module.dense_weight().detach(), dense[path], atol=1e-5, rtol=1e-5)
        expected = sample_pairs(module.S, 4, round_generator(5, 1, path))  # (seed, round 1, layer path)
        assert torch.equal(module.selected, expected)
    for param in model.parameters():
        if id(param) in spectral:
            assert len(optimizer.state[param]) == 0
        else:
            assert all(torch.equal(optimizer.state[param][k], v) for k, v in state[param].items())
    first = _loss(model, tiny_ids).item()
    _train(model, tiny_ids, optimizer, steps=9, schedule=schedule, first=4)
    assert _loss(model, tiny_ids).item() < 0.9 * first  # training goes on across rounds


def test_a_saved_model_loads_back_identically_and_its_next_round_agrees(tmp_path):
    ids = torch.randint(0, TINY_VOCAB, (2, 8), generator=torch.Generator().manual_seed(2))
    model = _sst_llama(round_length=2, rank_pattern={"down_proj": 2})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    _train(model, ids, optimizer, steps=3, schedule=SstSchedule(model))  # one round ended, at step 2
    save_model(model, tmp_path / "m")
    loaded, _ = load(str(tmp_path / "m"))
    assert isinstance(loaded.model.layers[1].mlp.down_proj, SpectralLinear)
    assert loaded.model.layers[1].mlp.down_proj.rank == 2
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=0, rtol=0)
    for twin in (model, loaded):  # the stateless schedule: the next round is the same on both
        SstSchedule(twin).after_step(4, torch.optim.AdamW(twin.parameters()))
    theirs = _spectral(loaded)
    for path, mine in _spectral(model).items():
        assert torch.equal(mine.selected, theirs[path].selected), path
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(),
                                                     theirs[path].state_dict().values(), strict=True))


def test_bad_settings_are_config_errors_naming_the_layer():
    with pytest.raises(ConfigError, match=r"model\.layers\.0\.self_attn\.k_proj: rank 17 exceeds min"):
        _sst_llama(rank_pattern={"k_proj": 17})
    for bad, match in (({"round_length": 0}, "round_length must be a positive integer"),
                       ({"alpha": 2.0}, "sst does not use alpha")):
        with pytest.raises(ConfigError, match=match):
            _sst_llama(**bad)
    with pytest.raises(ConfigError, match="is lowrank, not sst"):
        SstSchedule(rankwise.reparametrize(make_tiny_llama(), "lowrank", rank=4))
    with pytest.raises(ConfigError, match="rankwise.reparametrize"):
        SstSchedule(make_tiny_llama())
    model = _sst_llama(round_length=2)
    with pytest.raises(ConfigError, match="no optimizer"):
        SstSchedule(model).after_step(2)
