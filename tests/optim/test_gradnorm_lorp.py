"""GradNormLoRP: W = g ⊙ V/‖V‖_row trained by AdamW on g and GaLore-projected AdamW on V."""

import json

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from rankwise.errors import ConfigError
from rankwise.io import save_tensors
from rankwise.io.readers import load_tensors
from rankwise.optim import OPTIMIZERS, build_optimizer, trainer_optimizer
from rankwise.optim.gradnorm_lorp import GradNormLoRP, row_norms, weight_norm_gradients, weight_norm_weight
from rankwise.optim.projectors import project, project_back
from rankwise.train.checkpoint import flatten_optimizer, unflatten_optimizer

from ..conftest import make_tiny_llama
from .test_projected import SHAPES, _fit_both, _quadratic_loss, _randn, _tiny_run, _train


def _steps(weight, optimizer, loss, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        loss(weight).backward()
        optimizer.step()


def _autograd_gradients(loss, direction, magnitude):
    """(∇V, ∇g) of L(g ⊙ V/‖V‖_row), by autograd."""
    V, g = direction.detach().clone().requires_grad_(True), magnitude.detach().clone().requires_grad_(True)
    return torch.autograd.grad(loss(g * V / V.norm(dim=1, keepdim=True)), (V, g))


# --- the rule -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_are_the_chain_rule_of_the_reparameterization(shape):
    loss = _quadratic_loss(shape)
    V, g = _randn(*shape, seed=3), _randn(shape[0], 1, seed=4)
    W = (g * V / V.norm(dim=1, keepdim=True)).requires_grad_(True)
    grad_W = torch.autograd.grad(loss(W), W)[0]
    grad_V, grad_g = weight_norm_gradients(grad_W, V, g)
    expected_V, expected_g = _autograd_gradients(loss, V, g)
    torch.testing.assert_close(grad_V, expected_V, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad_g, expected_g, atol=1e-10, rtol=0)
    assert (grad_V * V).sum(dim=1).abs().max() < 1e-10  # ∇V has no radial part: it turns V, never scales it
    torch.testing.assert_close(weight_norm_weight(V, g), W.detach(), atol=1e-15, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("scale", "weight_decay"), [(0.25, 0.0), (1.0, 0.1)])
def test_one_step_is_the_formula(shape, scale, weight_decay):
    """Step 1 by hand: V₀ = W₀, g₀ = ‖W₀‖_row; P = top-r singular vectors of ∇V on the smaller side;
    Adam's first step is R/(|R| + ε) with R = project(∇V, P); decay is decoupled; W₁ = g₁ V₁/‖V₁‖."""
    loss, lr, eps, rank = _quadratic_loss(shape), 0.05, 1e-8, 2
    W0 = _randn(*shape, seed=3)
    weight = nn.Parameter(W0.clone())
    optimizer = GradNormLoRP([{"params": [weight], "rank": rank, "scale": scale}], lr=lr, eps=eps,
                             weight_decay=weight_decay)
    _steps(weight, optimizer, loss, 1)

    g0 = W0.norm(dim=1, keepdim=True)
    grad_V, grad_g = _autograd_gradients(loss, W0, g0)
    tall = shape[0] >= shape[1]
    U, _, Vh = torch.linalg.svd(grad_V, full_matrices=False)
    P = Vh[:rank].T if tall else U[:, :rank]
    R = grad_V @ P if tall else P.T @ grad_V
    N = R / (R.abs() + eps)
    decay = 1 - lr * weight_decay
    V1 = decay * W0 - lr * scale * (N @ P.T if tall else P @ N)
    g1 = decay * g0 - lr * grad_g / (grad_g.abs() + eps)
    state = optimizer.state[weight]
    torch.testing.assert_close(state["direction"], V1, atol=1e-12, rtol=0)
    torch.testing.assert_close(state["magnitude"], g1, atol=1e-12, rtol=0)
    torch.testing.assert_close(weight.detach(), g1 * V1 / V1.norm(dim=1, keepdim=True), atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_fixed_basis_is_torch_adamw_on_the_projected_direction(shape):
    """While P is fixed, Y = project(V, P) follows torch.optim.AdamW on Z fed project(∇V, P), as
    ProjectedAdamW's weights do (Y_t = α Z_t + (1 − α) cᵗ Y₀, the rest only decays), and g follows
    torch.optim.AdamW fed ∇g; both gradients taken at W = g ⊙ V/‖V‖_row."""
    loss, lr, weight_decay, scale, steps = _quadratic_loss(shape), 0.05, 0.1, 0.25, 6
    W0 = _randn(*shape, seed=3)
    weight = nn.Parameter(W0.clone())
    optimizer = GradNormLoRP([{"params": [weight], "rank": 3, "update_interval": 100, "scale": scale}],
                             lr=lr, weight_decay=weight_decay)
    _steps(weight, optimizer, loss, steps)
    P = optimizer.state[weight]["basis"]

    Y0 = project(W0, P)
    rest0 = W0 - project_back(Y0, P, shape)
    Z, g = nn.Parameter(Y0.clone()), nn.Parameter(row_norms(W0))
    reference = torch.optim.AdamW([Z, g], lr=lr, weight_decay=weight_decay)

    def direction_at(t):
        c = (1 - lr * weight_decay) ** t
        return project_back(scale * Z.detach() + (1 - scale) * c * Y0, P, shape) + c * rest0

    for t in range(steps):
        grad_V, grad_g = _autograd_gradients(loss, direction_at(t), g)
        Z.grad, g.grad = project(grad_V, P), grad_g
        reference.step()
    V = direction_at(steps)
    state = optimizer.state[weight]
    torch.testing.assert_close(state["direction"], V, atol=1e-10, rtol=0)
    torch.testing.assert_close(state["magnitude"], g.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(weight.detach(), weight_norm_weight(V, g.detach()), atol=1e-10, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_unprojected_weight_norm_is_torch_adamw_on_torchs_weight_norm(shape):
    """rank >= min(m, n): no projection, and (V, g) follow torch.optim.AdamW on the parameters of
    torch.nn.utils.parametrizations.weight_norm(dim=0) over several steps."""
    loss, lr, weight_decay, steps = _quadratic_loss(shape), 0.05, 0.1, 6
    W0 = _randn(*shape, seed=3)
    weight = nn.Parameter(W0.clone())
    ours = GradNormLoRP([{"params": [weight], "rank": min(shape)}], lr=lr, weight_decay=weight_decay)
    layer = nn.Linear(shape[1], shape[0], bias=False, dtype=torch.float64)
    layer.weight.data.copy_(W0)
    weight_norm(layer, dim=0)
    theirs = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    _steps(weight, ours, loss, steps)
    for _ in range(steps):
        theirs.zero_grad()
        loss(layer.weight).backward()
        theirs.step()
    state, parametrization = ours.state[weight], layer.parametrizations.weight
    assert "basis" not in state and state["exp_avg"].shape == shape
    torch.testing.assert_close(state["direction"], parametrization.original1.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(state["magnitude"], parametrization.original0.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(weight.detach(), layer.weight.detach(), atol=1e-10, rtol=0)


def test_plain_parameters_get_exactly_torch_adamw():
    """1-D parameters of a rank group and every parameter of a group without rank: torch's AdamW."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3), nn.LayerNorm(3))
    twin = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3), nn.LayerNorm(3))
    twin.load_state_dict(model.state_dict())
    ours = GradNormLoRP([{"params": [model[0].weight]},  # 2-D, but its group has no rank
                         {"params": [model[0].bias, *model[3].parameters()], "rank": 2}],
                        lr=0.01, weight_decay=0.1)
    plain = [model[0].weight, model[0].bias, *model[3].parameters()]
    references = [twin[0].weight, twin[0].bias, *twin[3].parameters()]
    theirs = torch.optim.AdamW(references, lr=0.01, weight_decay=0.1)
    _fit_both((model, ours), (twin, theirs))
    for mine, reference in zip(plain, references, strict=True):
        assert torch.equal(mine, reference)
        assert set(ours.state[mine]) == {"step", "exp_avg", "exp_avg_sq"}


# --- state: size, serialization, resume ---------------------------------------------------------------
def test_state_sizes_match_the_analytic_formula():
    m, n, r = 16, 6, 2
    tall, wide, bias = nn.Parameter(_randn(m, n)), nn.Parameter(_randn(n, m)), nn.Parameter(_randn(m))
    optimizer = GradNormLoRP([{"params": [tall, wide, bias], "rank": r}])
    for i, p in enumerate((tall, wide, bias)):
        p.grad = _randn(*p.shape, seed=10 + i)
    optimizer.step()
    held = {p: {k: v.numel() for k, v in optimizer.state[p].items() if torch.is_tensor(v)}
            for p in (tall, wide, bias)}
    magnitude = {"magnitude": m, "magnitude_exp_avg": m, "magnitude_exp_avg_sq": m}
    assert held[tall] == {"direction": m * n, "exp_avg": m * r, "exp_avg_sq": m * r, "basis": n * r,
                          **magnitude}
    n_magnitude = {key: n for key in magnitude}  # the wide (n×m) weight has n rows; moments r×m (left side)
    assert held[wide] == {"direction": n * m, "exp_avg": r * m, "exp_avg_sq": r * m, "basis": n * r,
                          **n_magnitude}
    assert held[bias] == {"exp_avg": m, "exp_avg_sq": m}
    assert all(optimizer.state[p]["step"] == 1 for p in (tall, wide, bias))
    assert sum(held[tall].values()) < 3 * m * n  # below AdamW's moments plus the copy of V


def test_resume_between_projection_updates_is_bitwise(tmp_path):
    full_model, full_optimizer = _tiny_run("gradnorm-lorp")
    _train(full_model, full_optimizer, range(8))  # bases chosen before steps 1, 4 and 7

    model, optimizer = _tiny_run("gradnorm-lorp")
    _train(model, optimizer, range(5))  # stop between the updates at steps 4 and 7
    tensors, rest = flatten_optimizer(optimizer.state_dict())
    assert {name.split(".", 2)[2] for name in tensors} >= {"direction", "magnitude", "basis",
                                                           "magnitude_exp_avg", "magnitude_exp_avg_sq"}
    save_tensors(tmp_path / "optimizer.safetensors", tensors)
    save_tensors(tmp_path / "model.safetensors", model.state_dict())
    (tmp_path / "optimizer.json").write_text(json.dumps(rest))

    resumed_model, resumed_optimizer = _tiny_run("gradnorm-lorp")
    resumed_model.load_state_dict(load_tensors(tmp_path / "model.safetensors")[0])
    saved_state = unflatten_optimizer(load_tensors(tmp_path / "optimizer.safetensors")[0],
                                      json.loads((tmp_path / "optimizer.json").read_text()))
    resumed_optimizer.load_state_dict(saved_state)
    for before, after in zip(model.parameters(), resumed_model.parameters(), strict=True):
        saved, restored = optimizer.state[before], resumed_optimizer.state[after]
        assert saved.keys() == restored.keys()
        for key, value in saved.items():
            same = torch.equal(value, restored[key]) and value.dtype == restored[key].dtype \
                if torch.is_tensor(value) else value == restored[key]
            assert same, key
    _train(resumed_model, resumed_optimizer, range(5, 8))
    for expected, got in zip(full_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(expected, got)


# --- a model, the registry, bad input -----------------------------------------------------------------
def test_tiny_llama_trains_its_block_matrices_weight_normalized(tiny_ids):
    model = make_tiny_llama().train()
    optimizer = trainer_optimizer(model, "gradnorm-lorp", lr=1e-2, rank=2, update_interval=2)
    assert isinstance(optimizer, GradNormLoRP)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = model(input_ids=tiny_ids, labels=tiny_ids).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    blocks = dict(model.model.layers.named_parameters())
    for name, param in model.named_parameters():
        state = optimizer.state[param]
        if param.ndim == 2 and name.removeprefix("model.layers.") in blocks:  # q, k, v, o, gate, up, down
            assert torch.equal(param, weight_norm_weight(state["direction"], state["magnitude"]))
            torch.testing.assert_close(row_norms(param), state["magnitude"].abs())
            assert state["exp_avg"].shape in {(param.shape[0], 2), (2, param.shape[1])}
        else:  # embeddings, head and norms: plain AdamW
            assert set(state) == {"step", "exp_avg", "exp_avg_sq"}


def test_registry_builds_gradnorm_lorp():
    assert "gradnorm-lorp" in OPTIMIZERS.names()
    linear, norm = nn.Linear(8, 12), nn.LayerNorm(12)
    groups = [{"params": [linear.weight, linear.bias]}, {"params": list(norm.parameters())}]
    optimizer = build_optimizer("gradnorm-lorp", groups, lr=1e-3, rank=2)
    assert isinstance(optimizer, GradNormLoRP)
    first = optimizer.param_groups[0]
    settings = (first["rank"], first["update_interval"], first["scale"], first["projector"])
    assert settings == (2, 200, 0.25, "svd")
    assert "rank" not in optimizer.param_groups[1] and "rank" not in groups[0]  # 1-D only; inputs untouched
    own = build_optimizer("gradnorm-lorp", [{"params": [linear.weight], "rank": 3}], lr=1e-3, rank=2)
    assert own.param_groups[0]["rank"] == 3  # a group's own setting wins
    linear.weight.grad = torch.randn(12, 8)
    optimizer.step()
    assert optimizer.state[linear.weight]["basis"].shape == (8, 2)


def test_bad_input_is_a_config_error():
    with pytest.raises(ConfigError, match=r"\(8, 4\)"):
        build_optimizer("gradnorm-lorp", [{"params": [nn.Parameter(torch.zeros(8, 4))]}], lr=1e-3, rank=0)
    with pytest.raises(ConfigError, match="update_proj_gap"):
        build_optimizer("gradnorm-lorp", [nn.Parameter(torch.ones(8, 4))], lr=1e-3, update_proj_gap=10)
    delta = nn.Parameter(torch.ones(8, 4))
    delta.data[5] = 0  # a zero row (e.g. the `full` adapter's ΔW) has no direction
    optimizer = build_optimizer("gradnorm-lorp", [delta], lr=1e-3, rank=2)
    delta.grad = torch.ones(8, 4)
    with pytest.raises(ConfigError, match=r"\(8, 4\).*all-zero row"):
        optimizer.step()
