"""LoRA-XS: only an r×r matrix trains, between frozen bases from W's top-r SVD."""

import torch
from torch import nn

import rankwise
from rankwise.adapters import layers_of

from ..conftest import make_tiny_llama


def test_r_squared_numbers_train_and_the_update_stays_in_the_top_singular_subspaces():
    rank = 4
    model = rankwise.adapt(make_tiny_llama(), "lora-xs", rank=rank)
    layers = layers_of(model, "default")
    assert rankwise.trainable_parameters(model)["trainable"] == rank**2 * len(layers)
    for path, adapter in layers.items():
        assert [n for n, p in adapter.named_parameters() if p.requires_grad] == ["lora_R"]
        with torch.no_grad():
            adapter.lora_R.normal_()
        U, _, Vh = torch.linalg.svd(model.get_submodule(path).weight.detach())
        U_r, V_r = U[:, :rank], Vh[:rank].T
        delta = adapter.delta_weight()
        assert delta.abs().max() > 1e-3
        # ΔW = P_U ΔW P_V: nothing outside W's top-r left and right singular subspaces
        torch.testing.assert_close(U_r @ (U_r.T @ delta @ V_r) @ V_r.T, delta, atol=1e-6, rtol=0)


def test_bases_are_u_and_s_v_and_the_forward_is_s_b_r_a():
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(20, 12)), "lora-xs", rank=3, alpha=6)
    layer, adapter = model[0], model[0].adapters["default"]
    U, S, Vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
    top = (U[:, :3] * S[:3]) @ Vh[:3]
    torch.testing.assert_close(adapter.lora_B @ adapter.lora_A, top, atol=1e-5, rtol=0)
    torch.testing.assert_close(adapter.lora_B.T @ adapter.lora_B, torch.eye(3), atol=1e-5, rtol=0)
    assert torch.count_nonzero(adapter.lora_R) == 0  # exact identity at init
    with torch.no_grad():
        adapter.lora_R.normal_()
    x = torch.randn(5, 20)
    expected = layer.base(x) + 2.0 * x @ (adapter.lora_B @ adapter.lora_R @ adapter.lora_A).T
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)


def test_the_codes_small_gaussian_init_is_available():
    torch.manual_seed(0)
    model = rankwise.adapt(nn.Sequential(nn.Linear(64, 64)), "lora-xs", rank=16, init_std=1e-5)
    R = model[0].adapters["default"].lora_R
    assert 0.5e-5 < R.std() < 2e-5
