"""BiPFT: sign binarization with the L2-optimal row scale, and a low-rank estimator of the residual that
lowers the binarized model's error."""

import torch

import rankwise
from rankwise.adapters import adapter_names
from rankwise.compress.compact import BinaryLinear

from ..conftest import TINY_VOCAB, make_tiny_llama


def test_the_residual_estimator_lowers_the_binarized_error():
    ids = torch.randint(0, TINY_VOCAB, (8, 16), generator=torch.Generator().manual_seed(3))
    batches = [{"input_ids": ids}]
    with torch.no_grad():
        reference = make_tiny_llama()(ids).logits
    model = rankwise.compress(make_tiny_llama(), "bipft", rank=2, calibration=batches)
    assert isinstance(model.model.layers[0].mlp.up_proj.base, BinaryLinear)
    assert adapter_names(model) == ["bipft"]
    with torch.no_grad():
        estimated = (model(ids).logits - reference).square().mean()
        rankwise.disable(model)  # plain sign binarization
        plain = (model(ids).logits - reference).square().mean()
    assert estimated < plain


def test_rank_one_by_default_and_full_rank_is_exact():
    layer = torch.nn.Linear(12, 6)
    model = torch.nn.Sequential(layer)
    x = torch.randn(50, 12)
    original = layer(x).detach()
    rankwise.compress(model, "bipft", calibration=[x])
    assert model[0].adapters["bipft"].lora_A.shape == (1, 12)
    model = torch.nn.Sequential(layer)
    rankwise.compress(model, "bipft", rank=6, calibration=[x])
    torch.testing.assert_close(model(x).detach(), original, atol=1e-4, rtol=1e-4)
