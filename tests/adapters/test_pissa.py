"""PiSSA: the adapter starts on W's principal singular directions; the base keeps the residual."""

import torch
from torch import nn

import rankwise


def _pissa(**fields):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16))
    original = model[0].weight.detach().clone()
    rankwise.adapt(model, "pissa", rank=4, **fields)
    return model, original, model[0].adapters["default"]


def test_adapter_holds_the_top_singular_part():
    _, W, pissa = _pissa(alpha=4)
    U, S, Vh = torch.linalg.svd(W)
    principal = (U[:, :4] * S[:4]) @ Vh[:4]
    torch.testing.assert_close(pissa.scale * pissa.lora_B @ pissa.lora_A, principal, atol=1e-5, rtol=0)
    # What stays frozen has exactly the remaining singular values.
    residual = torch.linalg.svdvals(W - principal)
    torch.testing.assert_close(residual[: 16 - 4], S[4:], atol=1e-5, rtol=0)


def test_any_alpha_gives_the_same_start():
    _, W, pissa = _pissa(alpha=16)
    x = torch.randn(3, 20)
    torch.testing.assert_close(
        pissa.scale * pissa.lora_B @ pissa.lora_A, pissa.scale * pissa.init_B @ pissa.init_A
    )
    model, _, _ = _pissa(alpha=16)
    torch.testing.assert_close(model(x), x @ W.T + model[0].bias, atol=1e-5, rtol=0)


def test_randomized_svd_variant_is_close_to_exact():
    _, _, exact = _pissa(alpha=4)
    _, _, fast = _pissa(alpha=4, svd_iters=4)
    torch.testing.assert_close(
        fast.init_B @ fast.init_A, exact.init_B @ exact.init_A, atol=1e-3, rtol=0
    )


def test_base_weight_is_never_modified():
    model, W, _ = _pissa()
    assert torch.equal(model[0].weight, W)
