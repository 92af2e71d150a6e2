"""LOST W = B A + S: B A is the top-r SVD part of the layer, S the residual on its strongest channels (so W
equals the layer there), and S's channels stay fixed and the others exactly zero through training."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.reparam.lost import ChannelSparseLinear


def _split_by_hand(W, rank, count, along_in):
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    top = (U[:, :rank] * S[:rank]) @ Vh[:rank]
    residual = W.double() - top
    channels = residual.norm(dim=0 if along_in else 1).topk(count).indices.sort().values
    sparse = torch.zeros_like(residual)
    if along_in:
        sparse[:, channels] = residual[:, channels]
    else:
        sparse[channels] = residual[channels]
    return top, sparse, channels


@pytest.mark.parametrize("channel_dim", ["in", "out"])
def test_init_is_the_top_r_part_plus_the_strongest_residual_channels(channel_dim):
    linear = nn.Linear(24, 18)
    W = linear.weight.detach().clone()
    layer = rankwise.reparametrize(nn.Sequential(linear), "lost", rank=4, density=0.25,
                                   channel_dim=channel_dim)[0]
    along_in = channel_dim == "in"
    count = round(0.25 * (24 if along_in else 18))
    top, sparse, channels = _split_by_hand(W, 4, count, along_in)
    assert isinstance(layer, ChannelSparseLinear) and layer.scale == 1.0
    assert torch.equal(layer.channels, channels)
    torch.testing.assert_close((layer.B @ layer.A).double(), top, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.sparse_weight().double(), sparse, atol=1e-5, rtol=1e-5)
    kept = layer.dense_weight()[:, channels] if along_in else layer.dense_weight()[channels]
    torch.testing.assert_close(kept, W[:, channels] if along_in else W[channels], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channel_dim", ["in", "out"])
def test_channels_stay_fixed_and_the_rest_of_s_stays_exactly_zero(channel_dim):
    model = rankwise.reparametrize(nn.Sequential(nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 8)), "lost",
                                   rank=3, density=0.25, channel_dim=channel_dim)
    layers = [model[0], model[2]]
    channels = [layer.channels.clone() for layer in layers]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(9, 16, generator=torch.Generator().manual_seed(0))
    for _ in range(4):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    for layer, start in zip(layers, channels):
        assert torch.equal(layer.channels, start) and layer.channels.grad is None
        sparse = layer.dense_weight() - layer.B @ layer.A
        outside = torch.ones(sparse.shape, dtype=torch.bool)
        if channel_dim == "in":
            outside[:, start] = False
        else:
            outside[start] = False
        assert torch.equal(layer.sparse_weight()[outside], torch.zeros(int(outside.sum())))
        torch.testing.assert_close(sparse[outside], torch.zeros(int(outside.sum())), atol=1e-6, rtol=0)


def test_the_block_gradient_is_the_dense_gradient_on_the_kept_channels():
    layer = rankwise.reparametrize(nn.Sequential(nn.Linear(10, 8)), "lost", rank=2, density=0.3)[0]
    generator = torch.Generator().manual_seed(1)
    x, upstream = torch.randn(5, 10, generator=generator), torch.randn(5, 8, generator=generator)
    (layer(x) * upstream).sum().backward()
    dense = upstream.T @ x
    torch.testing.assert_close(layer.block.grad, dense[:, layer.channels])
