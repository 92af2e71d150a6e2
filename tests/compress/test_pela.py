"""PELA: the rank formula's parameter budget, the SVD step equal to `svd`, a distillation that brings
the student's block features towards the teacher's while only the factors move, and a saved model."""

import pytest
import torch
from torch import nn

import rankwise
from rankwise.compress import LowRankLinear, installed
from rankwise.compress.pela import pela_rank
from rankwise.compress.svd import Svd, SvdConfig
from rankwise.errors import ConfigError
from rankwise.io import save_model
from rankwise.models import load

from ..conftest import TINY_VOCAB, make_tiny_llama


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _batches(count=4):
    return [{"input_ids": torch.randint(0, TINY_VOCAB, (4, 16), generator=torch.Generator().manual_seed(i))}
            for i in range(count)]


def _feature_mse(student, teacher, batches):
    """Mean over batches and decoder blocks of MSE(student block output, teacher block output)."""
    def outputs(model, batch):
        found = []
        hooks = [block.register_forward_hook(lambda m, a, out: found.append(out[0] if isinstance(out, tuple)
                                                                            else out))
                 for block in model.model.layers]
        with torch.no_grad():
            model(**batch)
        for hook in hooks:
            hook.remove()
        return found
    errors = [nn.functional.mse_loss(s, t) for batch in batches
              for s, t in zip(outputs(student, batch), outputs(teacher, batch), strict=True)]
    return float(torch.stack(errors).mean())


@pytest.mark.parametrize("c", [1.5, 2, 3, 4])
def test_the_rank_formula_keeps_about_one_cth_of_the_parameters(c):
    for inp, out in [(32, 32), (32, 64), (576, 1536), (768, 3072)]:
        k = pela_rank(inp, out, c)
        kept = k * (inp + out) / (inp * out)
        assert 1 / c - (inp + out) / (inp * out) < kept <= 1 / c  # floor: at most one rank short of 1/c
    model = rankwise.compress(make_tiny_llama(), "pela", compression_ratio=c, steps=0)
    low = [m for m in model.modules() if isinstance(m, LowRankLinear)]
    ratio = sum(m.A.numel() + m.B.numel() for m in low) / sum(m.in_features * m.out_features for m in low)
    assert 1 / c - 0.1 < ratio <= 1 / c


def test_without_distillation_pela_is_svd_at_that_rank():
    original = make_tiny_llama()
    model = rankwise.compress(make_tiny_llama(), "pela", steps=0)
    for path, module in model.named_modules():
        if isinstance(module, LowRankLinear):
            layer = original.get_submodule(path)
            assert module.rank == layer.in_features * layer.out_features // (2 * (layer.in_features
                                                                                 + layer.out_features))
            svd = Svd.build(layer, SvdConfig(rank=module.rank))
            assert torch.equal(module.A, svd.A) and torch.equal(module.B, svd.B)


def test_distillation_brings_block_features_to_the_teacher_and_trains_only_the_factors():
    batches, held_out = _batches(), _batches(6)[4:]
    teacher = make_tiny_llama()
    svd_only = rankwise.compress(make_tiny_llama(), "pela", steps=0, targets=["q_proj", "v_proj", "up_proj"])
    model = rankwise.compress(make_tiny_llama(), "pela", steps=40, lr=3e-3, calibration=batches,
                              targets=["q_proj", "v_proj", "up_proj"])
    # on the batches it saw (0.35x here), and on two it did not (0.75x)
    assert _feature_mse(model, teacher, batches) < 0.5 * _feature_mse(svd_only, teacher, batches)
    assert _feature_mse(model, teacher, held_out) < 0.9 * _feature_mse(svd_only, teacher, held_out)
    trained = svd_only.state_dict()
    for key, value in model.state_dict().items():
        factor = key.rpartition(".")[2] in ("A", "B")
        assert torch.equal(value, trained[key]) != factor, key  # the factors moved, nothing else did
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert not model.training  # the mode it came in


def test_the_weight_perturbation_term_alone_shrinks_the_largest_weight_error():
    original = make_tiny_llama().model.layers[0].mlp.up_proj.weight.detach()

    def largest_error(model):
        up = model.model.layers[0].mlp.up_proj
        return float((up.B @ up.A - original).abs().max())
    fields = {"targets": ["up_proj"], "feature_weight": 0.0, "inf_norm_weight": 1.0, "lr": 1e-3}
    svd_only = rankwise.compress(make_tiny_llama(), "pela", steps=0, **fields)
    model = rankwise.compress(make_tiny_llama(), "pela", steps=20, calibration=_batches(1), **fields)
    assert largest_error(model) < largest_error(svd_only)


def test_a_model_without_blocks_distils_the_compressed_layers_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    teacher = [layer.weight.detach().clone() for layer in (model[0], model[2])]
    x = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    reference = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    reference.load_state_dict(model.state_dict())
    rankwise.compress(model, "pela", steps=10, lr=1e-3, calibration=x)
    assert isinstance(model[0], LowRankLinear) and isinstance(model[2], LowRankLinear)
    assert not torch.equal(model[0].B @ model[0].A, Svd.build(reference[0], SvdConfig(rank=5)).dense_weight())
    assert torch.equal(reference[0].weight, teacher[0])  # the teacher is left as it was


def test_distillation_without_batches_is_refused_and_the_model_restored(tiny_ids):
    model = make_tiny_llama()
    before = _logits(model, tiny_ids)
    with pytest.raises(ConfigError, match="pass calibration="):
        rankwise.compress(model, "pela", steps=5)
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())
    assert installed(model) == []  # no record left to save
    assert torch.equal(_logits(model, tiny_ids), before)


@pytest.mark.parametrize("fields, match", [
    ({"compression_ratio": 0.5}, "compression_ratio must be >= 1"),
    ({"steps": -1}, "steps must be"),
    ({"feature_weight": 0.0}, "distillation needs a loss"),
    ({"compression_ratio": 100.0, "targets": ["k_proj"]}, "k_proj: compression_ratio 100.0 leaves rank 0"),
])
def test_bad_settings_are_rejected(fields, match):
    with pytest.raises(ConfigError, match=match):
        rankwise.compress(make_tiny_llama(), "pela", **fields)


def test_a_distilled_model_folder_loads_back(tmp_path, tiny_ids, cache):
    model = rankwise.compress(make_tiny_llama(), "pela", steps=5, lr=1e-3, calibration=_batches(2),
                              compression_ratio=3, targets=["q_proj", "down_proj"])
    expected = _logits(model, tiny_ids)
    save_model(model, tmp_path / "m")
    loaded, _ = load(str(tmp_path / "m"))
    down = loaded.model.layers[1].mlp.down_proj
    assert isinstance(down, LowRankLinear) and down.rank == 64 * 32 // (3 * 96)
    assert torch.equal(_logits(loaded, tiny_ids), expected)
