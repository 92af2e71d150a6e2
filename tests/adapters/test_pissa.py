"""PiSSA: the adapter starts on W's principal singular directions; the base keeps the residual."""

import pytest
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


@pytest.mark.parametrize("rows", [(5, 24), (2, 3, 24)])
def test_the_rank_2r_path_has_the_gradients_of_the_two_plain_paths(rows):
    # Its backward is written by hand (to keep no concatenated factors): check it against autograd's.
    from rankwise.adapters.lora import lora_delta
    from rankwise.adapters.pissa import PrincipalSwap

    gen = torch.Generator().manual_seed(0)
    A, B, A0, B0 = (torch.randn(shape, generator=gen) for shape in [(4, 24), (16, 4), (4, 24), (16, 4)])
    x, up = torch.randn(rows, generator=gen), torch.randn(*rows[:-1], 16, generator=gen)

    def grads(update):
        leaves = [t.clone().requires_grad_() for t in (x, A, B)]
        out = update(*leaves)
        (out * up).sum().backward()
        return [out.detach()] + [t.grad for t in leaves]

    fused = grads(lambda x, A, B: PrincipalSwap.apply(x, A, B, A0, B0, 0.5))
    plain = grads(lambda x, A, B: lora_delta(x, A, B, 0.5) - lora_delta(x, A0, B0, 0.5))
    for got, want in zip(fused, plain):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
