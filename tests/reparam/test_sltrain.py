"""SLTrain W = (α/r)·B A + S: the code's init (B = 0, so W₀ = S), a uniformly random support that never
moves while training, and the sparse gradient equal to the dense gradient gathered at the support."""

import torch
from torch import nn

import rankwise
from rankwise.reparam.sltrain import RandomSparseLinear

from ..conftest import make_tiny_llama


def test_init_follows_the_code():
    model = rankwise.reparametrize(nn.Sequential(nn.Linear(40, 30)), "sltrain", rank=6, density=0.05)
    layer = model[0]
    assert isinstance(layer, RandomSparseLinear) and layer.scale == 32.0 / 6
    assert not layer.B.any()  # W₀ = S
    assert torch.equal(layer.dense_weight(), layer.sparse_weight())
    indices = layer.indices
    assert indices.numel() == int(0.05 * 30 * 40) and indices.dtype == torch.long
    assert torch.equal(indices, indices.unique())  # distinct and sorted
    assert 0 <= indices.min() and indices.max() < 30 * 40
    assert layer.values.abs().max() <= 40 ** -0.5 and layer.A.abs().max() <= 40 ** -0.5
    assert dict(layer.named_buffers()) == {"indices": indices}  # a buffer: saved, never trained


def test_supports_differ_between_layers():
    model = rankwise.reparametrize(make_tiny_llama(), "sltrain", rank=4, density=0.2,
                                   targets=["q_proj", "o_proj"])
    q, o = model.model.layers[0].self_attn.q_proj, model.model.layers[0].self_attn.o_proj  # both (32, 32)
    assert not torch.equal(q.indices, o.indices)


def test_the_support_stays_fixed_and_only_its_values_get_gradients(tiny_ids):
    model = rankwise.reparametrize(make_tiny_llama(), "sltrain", rank=4, density=0.1)
    layers = [m for m in model.modules() if isinstance(m, RandomSparseLinear)]
    supports = [layer.indices.clone() for layer in layers]
    values = [layer.values.detach().clone() for layer in layers]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(tiny_ids, labels=tiny_ids).loss.backward()
        optimizer.step()
    for layer, support, start in zip(layers, supports, values):
        assert torch.equal(layer.indices, support) and layer.indices.grad is None
        assert not torch.equal(layer.values.detach(), start)
        assert layer.B.any()  # B left zero after the first step: the low-rank part trains too


def test_sparse_and_factor_gradients_are_the_dense_gradient_projected():
    linear = nn.Linear(12, 10, dtype=torch.float64)  # float64: an exact comparison of two computations
    layer = rankwise.reparametrize(nn.Sequential(linear), "sltrain", rank=3, density=0.3)[0]
    with torch.no_grad():
        layer.B.normal_()  # so that A gets a gradient too
    generator = torch.Generator().manual_seed(0)
    x, upstream = (torch.randn(7, n, generator=generator, dtype=torch.float64) for n in (12, 10))
    (layer(x) * upstream).sum().backward()
    dense = upstream.T @ x  # dL/dW for y = W x
    torch.testing.assert_close(layer.values.grad, dense.flatten()[layer.indices])
    torch.testing.assert_close(layer.B.grad, layer.scale * dense @ layer.A.detach().T)
    torch.testing.assert_close(layer.A.grad, layer.scale * layer.B.detach().T @ dense)
