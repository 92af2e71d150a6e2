"""ProjectedAdamW and its projectors (GaLore's SVD, the SVD-free DCT selection, a seeded random basis)."""

import json

import pytest
import torch
from torch import nn

from rankwise.errors import ConfigError
from rankwise.io import save_tensors
from rankwise.io.readers import load_tensors
from rankwise.optim import OPTIMIZERS, build_optimizer
from rankwise.optim.projected import ProjectedAdamW
from rankwise.optim.projectors import (
    PROJECTORS,
    dct_columns,
    dct_matrix,
    project,
    project_back,
    random_basis,
)
from rankwise.optim.rules import adamw_update
from rankwise.train.checkpoint import flatten_optimizer, unflatten_optimizer

KINDS = sorted(PROJECTORS)
SHAPES = [(10, 6), (6, 10)]  # tall (projected on the right) and wide (on the left)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _fit_both(*runs: tuple[nn.Module, torch.optim.Optimizer], steps: int = 5) -> None:
    """Five steps of each (network, optimizer) on the same small regression."""
    x, y = _randn(16, 4).float(), _randn(16, 3, seed=1).float()
    for net, optimizer in runs:
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            optimizer.step()


def _quadratic_loss(shape, seed=1):
    """L(W) = ½‖A W B − C‖², whose gradient changes with W, so trajectories are not trivial. A and B have
    full column/row rank: a direction with an exactly zero gradient would make Adam's first step turn
    rounding noise into a full-size step (g / (|g| + ε) ≈ ±1), and no equality would survive that."""
    A, B = _randn(12, shape[0], seed=seed), _randn(shape[1], 12, seed=seed + 1)
    C = _randn(12, 12, seed=seed + 2)
    return lambda W: 0.5 * (A @ W @ B - C).square().sum()


def _gradient(loss, W):
    W = W.detach().clone().requires_grad_(True)
    loss(W).backward()
    return W.grad


def _basis(kind, grad, rank):
    return PROJECTORS[kind].basis(PROJECTORS[kind].refresh(grad, rank, seed=0, step=0, index=0), grad)


# --- projectors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_projection_shapes_and_orthonormal_basis(kind, shape):
    G = _randn(*shape)
    P = _basis(kind, G, 3)
    assert P.shape == (6, 3)
    torch.testing.assert_close(P.T @ P, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    low = project(G, P)
    assert low.shape == ((10, 3) if shape[0] >= shape[1] else (3, 10))
    back = project_back(low, P, G.shape, scale=0.25)
    # Back-projection is α times the orthogonal projection of G onto the basis' span, on GaLore's side.
    span = G @ P @ P.T if shape[0] >= shape[1] else P @ P.T @ G
    torch.testing.assert_close(back, 0.25 * span, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_svd_basis_gives_the_best_rank_r_approximation(shape):
    G = _randn(*shape)
    P = _basis("svd", G, 3)
    error = torch.linalg.matrix_norm(G - project_back(project(G, P), P, G.shape))
    torch.testing.assert_close(error, torch.linalg.svdvals(G)[3:].norm())  # Eckart-Young


def test_dct_matrix_is_the_orthonormal_dct_ii():
    fft = pytest.importorskip("scipy.fft")
    x = _randn(3, 7)
    Q = dct_matrix(7, torch.float64)
    torch.testing.assert_close(x @ Q, torch.from_numpy(fft.dct(x.numpy(), norm="ortho", axis=1)))
    torch.testing.assert_close(Q.T @ Q, torch.eye(7, dtype=torch.float64))


@pytest.mark.parametrize("shape", SHAPES)
def test_dct_selects_the_columns_with_the_largest_l1_coefficients(shape):
    Q, cols = dct_matrix(6, torch.float64), [4, 1]
    coeffs = _randn(10, 2)
    coeffs[:, 0] *= 3  # column 4 carries more ℓ1 mass than column 1
    G = coeffs @ Q[:, cols].T if shape[0] >= shape[1] else Q[:, cols] @ coeffs.T
    G = G + 1e-3 * _randn(*shape, seed=5)
    assert dct_columns(G, 2).tolist() == cols
    oriented = G if shape[0] >= shape[1] else G.T
    scores = (oriented @ Q).abs().sum(dim=0)
    chosen = dct_columns(G, 3)
    others = [i for i in range(6) if i not in chosen.tolist()]
    assert scores[chosen].min() >= scores[others].max()


def test_random_basis_is_a_pure_function_of_seed_step_and_index():
    before = torch.get_rng_state()
    basis = random_basis(8, 3, seed=1, step=4, index=2, dtype=torch.float64)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is neither read nor advanced
    assert torch.equal(basis, random_basis(8, 3, seed=1, step=4, index=2, dtype=torch.float64))
    for other in [(2, 4, 2), (1, 5, 2), (1, 4, 3)]:
        assert not torch.allclose(basis, random_basis(8, 3, *other, dtype=torch.float64))


# --- the AdamW rule -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("scale", "weight_decay"), [(1.0, 0.1), (0.25, 0.0), (0.25, 0.1)])
def test_fixed_basis_is_torch_adamw_on_the_projected_coordinates(kind, shape, scale, weight_decay):
    """While P is fixed, Y = project(W, P) follows torch.optim.AdamW run on Z (Z₀ = Y₀) fed project(G, P):
    Y_t = α Z_t + (1 − α) cᵗ Y₀ with c = 1 − lr·λ, and the rest of W only decays: cᵗ (W₀ − back(Y₀))."""
    loss, lr, steps = _quadratic_loss(shape), 0.05, 6
    W0 = _randn(*shape, seed=3)
    weight = nn.Parameter(W0.clone())
    optimizer = ProjectedAdamW([{"params": [weight], "rank": 3, "update_interval": 100, "scale": scale,
                                 "projector": kind}], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(weight).backward()
        optimizer.step()
    P = PROJECTORS[kind].basis(optimizer.state[weight], weight)

    Y0 = project(W0, P)
    rest0 = W0 - project_back(Y0, P, shape)
    Z = nn.Parameter(Y0.clone())
    reference = torch.optim.AdamW([Z], lr=lr, weight_decay=weight_decay)

    def weight_at(t):
        c = (1 - lr * weight_decay) ** t
        return project_back(scale * Z.detach() + (1 - scale) * c * Y0, P, shape) + c * rest0

    for t in range(steps):
        Z.grad = project(_gradient(loss, weight_at(t)), P)
        reference.step()
    torch.testing.assert_close(weight.detach(), weight_at(steps), atol=1e-10, rtol=0)


def _adamw_trajectory(W0, loss, steps, basis=None, lr=0.05, weight_decay=0.1):
    W, state = W0.clone(), {}
    for _ in range(steps):
        adamw_update(W, _gradient(loss, W), state, lr=lr, betas=(0.9, 0.999), eps=1e-8,
                     weight_decay=weight_decay, basis=basis)
    return W


def _torch_adamw_trajectory(W0, loss, steps, rotation=None, lr=0.05, weight_decay=0.1):
    """torch.optim.AdamW on Z = W R (R orthogonal, identity if None), the loss taken at W = Z Rᵀ."""
    R = torch.eye(W0.shape[1], dtype=W0.dtype) if rotation is None else rotation
    Z = nn.Parameter(W0 @ R)
    optimizer = torch.optim.AdamW([Z], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(Z @ R.T).backward()
        optimizer.step()
    return Z.detach() @ R.T


def test_full_rank_projection_is_adamw_only_up_to_a_rotation():
    """Full rank, α = 1, P fixed: the projected rule is AdamW in P's coordinates. Adam's elementwise
    normalization is not rotation-invariant, so this is plain AdamW only when P is a (signed) permutation."""
    shape, steps = (10, 6), 5
    loss, W0 = _quadratic_loss(shape), _randn(*shape, seed=3)
    adamw = _torch_adamw_trajectory(W0, loss, steps)

    permutation = -torch.eye(6, dtype=torch.float64)[[3, 0, 5, 1, 4, 2]]
    torch.testing.assert_close(_adamw_trajectory(W0, loss, steps, permutation), adamw, atol=1e-12, rtol=0)

    for kind in KINDS:
        Q = _basis(kind, _gradient(loss, W0), 6)  # a full orthonormal basis: a rotation
        projected = _adamw_trajectory(W0, loss, steps, Q)
        torch.testing.assert_close(projected, _torch_adamw_trajectory(W0, loss, steps, Q), atol=1e-10, rtol=0)
        assert (projected - adamw).abs().max() > 1e-3


def test_plain_parameters_get_exactly_torch_adamw():
    """1-D parameters, groups without rank, and rank >= min(m, n) take the unprojected AdamW step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3), nn.LayerNorm(3))
    twin = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3), nn.LayerNorm(3))
    twin.load_state_dict(model.state_dict())
    ours = ProjectedAdamW([{"params": model[0].parameters(), "rank": 4},  # (8, 4): rank = min
                           {"params": model[2].parameters(), "rank": 5, "projector": "dct"},  # (3, 8)
                           {"params": model[3].parameters()}], lr=0.01, weight_decay=0.1)
    theirs = torch.optim.AdamW(twin.parameters(), lr=0.01, weight_decay=0.1)
    _fit_both((model, ours), (twin, theirs))
    for mine, reference in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(mine, reference)  # the same arithmetic as torch's single-tensor AdamW, bit for bit
        assert set(ours.state[mine]) == {"step", "exp_avg", "exp_avg_sq"}
        assert ours.state[mine]["exp_avg"].shape == mine.shape


# --- state: size, serialization, resume ---------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_state_sizes_match_the_analytic_formula(kind):
    m, n, r = 16, 6, 2
    tall, wide, bias = nn.Parameter(_randn(m, n)), nn.Parameter(_randn(n, m)), nn.Parameter(_randn(m))
    optimizer = ProjectedAdamW([{"params": [tall, wide, bias], "rank": r, "projector": kind}])
    for i, p in enumerate((tall, wide, bias)):
        p.grad = _randn(*p.shape, seed=10 + i)
    optimizer.step()
    held = {p: sum(t.numel() for t in optimizer.state[p].values() if torch.is_tensor(t))
            for p in (tall, wide, bias)}
    basis = r if kind == "dct" else n * r  # dct keeps r column indices; the shared n×n DCT is not per layer
    assert held[tall] == 2 * m * r + basis  # exp_avg and exp_avg_sq are m×r
    assert held[wide] == 2 * r * m + basis  # ... and r×m on the left side
    assert held[bias] == 2 * m              # plain AdamW
    assert held[tall] < 2 * m * n


def _tiny_run(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 5))
    optimizer = build_optimizer(kind, [{"params": list(model.parameters())}], lr=0.01, weight_decay=0.01,
                                rank=3, update_interval=3)
    return model, optimizer


def _train(model, optimizer, steps):
    for step in steps:
        x, y = _randn(4, 8, seed=100 + step).float(), _randn(4, 5, seed=200 + step).float()
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("kind", ["galore", "dct", "random"])
def test_resume_between_projection_updates_is_bitwise(kind, tmp_path):
    full_model, full_optimizer = _tiny_run(kind)
    _train(full_model, full_optimizer, range(8))  # bases chosen before steps 1, 4 and 7

    model, optimizer = _tiny_run(kind)
    _train(model, optimizer, range(5))  # stop between the updates at steps 4 and 7
    tensors, rest = flatten_optimizer(optimizer.state_dict())
    save_tensors(tmp_path / "optimizer.safetensors", tensors)
    save_tensors(tmp_path / "model.safetensors", model.state_dict())
    (tmp_path / "optimizer.json").write_text(json.dumps(rest))

    resumed_model, resumed_optimizer = _tiny_run(kind)
    resumed_model.load_state_dict(load_tensors(tmp_path / "model.safetensors")[0])
    saved = unflatten_optimizer(load_tensors(tmp_path / "optimizer.safetensors")[0],
                                json.loads((tmp_path / "optimizer.json").read_text()))
    resumed_optimizer.load_state_dict(saved)
    for before, after in zip(model.parameters(), resumed_model.parameters(), strict=True):
        for key, value in optimizer.state[before].items():  # the basis is restored, not recomputed
            restored = resumed_optimizer.state[after][key]
            if torch.is_tensor(value):
                assert torch.equal(value, restored) and value.dtype == restored.dtype, key
            else:
                assert value == restored, key
    _train(resumed_model, resumed_optimizer, range(5, 8))
    for expected, got in zip(full_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(expected, got)


# --- configuration ------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", [{"rank": 0}, {"rank": -2}, {"rank": 2.5}, {"rank": True}, {"rank": "4"},
                                     {"rank": 2, "update_interval": 0}, {"rank": 2, "projector": "pca"},
                                     {"rank": 2, "scale": "big"}])
def test_bad_settings_are_config_errors_naming_the_shape(setting):
    with pytest.raises(ConfigError, match=r"\(8, 4\)"):
        ProjectedAdamW([{"params": [nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(8, 4))],
                         **setting}])
    with pytest.raises(ConfigError):
        build_optimizer("galore", [{"params": [nn.Parameter(torch.zeros(8, 4))]}], lr=1e-3, rank=0)


def test_registry_builds_each_projected_optimizer():
    assert {"galore", "dct", "random"} <= set(OPTIMIZERS.names())
    linear, norm = nn.Linear(8, 12), nn.LayerNorm(12)
    groups = [{"params": [linear.weight, linear.bias]},
              {"params": list(norm.parameters()), "weight_decay": 0.0}]
    optimizer = build_optimizer("galore", groups, lr=1e-3, rank=4)
    assert isinstance(optimizer, ProjectedAdamW)
    first = optimizer.param_groups[0]
    settings = (first["rank"], first["update_interval"], first["scale"], first["projector"])
    assert settings == (4, 200, 0.25, "svd")
    assert "rank" not in optimizer.param_groups[1] and "rank" not in groups[0]  # 1-D only; inputs untouched
    assert build_optimizer("dct", groups, lr=1e-3, rank=4).param_groups[0]["projector"] == "dct"
    assert build_optimizer("random", groups, lr=1e-3, rank=4, seed=3).param_groups[0]["seed"] == 3
    own = build_optimizer("galore", [{"params": [linear.weight], "rank": 2}], lr=1e-3, rank=4)
    assert own.param_groups[0]["rank"] == 2  # a group's own setting wins
    with pytest.raises(ConfigError, match="update_proj_gap"):
        build_optimizer("dct", groups, lr=1e-3, update_proj_gap=10)
    with pytest.raises(ConfigError, match="seed"):
        build_optimizer("galore", groups, lr=1e-3, seed=1)
