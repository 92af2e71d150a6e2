"""LoRA, rsLoRA and DoRA on nn.Embedding, nn.Conv1d/2d/3d and GPT-2's Conv1D: same outputs as PEFT on the
same factors, exact merges, and round trips through rankwise's and PEFT's files."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import adapted_layers, layers_of
from rankwise.errors import ConfigError, NotMergeable, TargetError
from rankwise.io import load_adapter, save_adapter
from rankwise.surgery import find_targets

peft = pytest.importorskip("peft")

from .kinds_helpers import (  # noqa: E402
    IDS,
    KINDS,
    adapted,
    copy_into_peft,
    outputs,
    peft_twin,
    perturb,
    tiny_gpt2,
    tiny_net,
)

TOLERANCE = 1e-5
CASES = [(kind, method) for kind in KINDS for method in ("lora", "rslora", "dora")]


@pytest.mark.parametrize("kind, method", CASES)
def test_outputs_equal_peft_on_the_same_factors(kind, method):
    ours = adapted(kind, method)
    theirs = peft_twin(kind, method)
    copy_into_peft(ours, theirs)
    expected = outputs(theirs)
    assert (outputs(ours) - expected).abs().max() <= TOLERANCE
    assert (expected - outputs(KINDS[kind][0](0))).abs().max() > 1e-2  # the adapter really changes it


@pytest.mark.parametrize("kind, method", CASES)
def test_identity_at_init_and_exact_merge_unmerge_unload(kind, method):
    make, target = KINDS[kind]
    base = outputs(make(0))
    model = rankwise.adapt(make(0), method, targets=[target], rank=2, alpha=6.0)
    torch.testing.assert_close(outputs(model), base, atol=1e-6, rtol=0)
    perturb(model)
    unmerged = outputs(model)
    before = {path: layer.base.weight.detach().clone() for path, layer in adapted_layers(model).items()}
    rankwise.merge(model)
    assert (outputs(model) - unmerged).abs().max() <= TOLERANCE
    rankwise.unmerge(model)
    assert all(torch.equal(layer.base.weight, before[path]) for path, layer in adapted_layers(model).items())
    assert torch.equal(outputs(model), unmerged)
    rankwise.unload(model, merge=True)
    assert not adapted_layers(model) and (outputs(model) - unmerged).abs().max() <= TOLERANCE


@pytest.mark.parametrize("kind, method", CASES)
def test_rankwise_file_round_trip_is_exact(kind, method, tmp_path):
    model = adapted(kind, method)
    save_adapter(model, tmp_path / "a")
    assert torch.equal(outputs(load_adapter(KINDS[kind][0](0), tmp_path / "a")), outputs(model))


@pytest.mark.parametrize("kind, method", CASES)
def test_peft_export_loads_in_peft_with_same_outputs(kind, method, tmp_path):
    model = adapted(kind, method)
    save_adapter(model, tmp_path / "a", format="peft")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # PEFT warns on missing keys or a wrong fan_in_fan_out
        in_peft = peft.PeftModel.from_pretrained(KINDS[kind][0](0), str(tmp_path / "a")).eval()
    assert (outputs(in_peft) - outputs(model)).abs().max() <= TOLERANCE
    save_adapter(load_adapter(KINDS[kind][0](0), tmp_path / "a"), tmp_path / "b", format="peft")
    assert (tmp_path / "a" / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "b" / "adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize("kind, method", CASES)
def test_peft_made_adapter_loads_with_same_outputs(kind, method, tmp_path):
    theirs = perturb(peft_twin(kind, method))
    theirs.save_pretrained(str(tmp_path / "p"))
    with pytest.warns(UserWarning, match="no base-model fingerprint"):  # PEFT writes none
        ours = load_adapter(KINDS[kind][0](0), tmp_path / "p")
    assert next(iter(layers_of(ours, "default").values())).name == method
    assert (outputs(ours) - outputs(theirs)).abs().max() <= TOLERANCE


def test_all_linear_on_gpt2_is_peft_all_linear():
    theirs = peft.get_peft_model(tiny_gpt2(), peft.LoraConfig(r=2, target_modules="all-linear"))
    peft_paths = sorted(name.removeprefix("base_model.model.") for name, module in theirs.named_modules()
                        if isinstance(module, peft.tuners.lora.LoraLayer))
    ours = find_targets(tiny_gpt2(), "all-linear")
    assert sorted(ours) == peft_paths and len(ours) == 8  # c_attn, c_proj, c_fc, mlp c_proj × 2; no head


def test_stacked_dora_on_lora_merges_exactly():
    for kind in ("embedding", "conv2d", "gpt2-conv1d"):
        model = adapted(kind, "lora")
        rankwise.adapt(model, "dora", name="above", targets=[KINDS[kind][1]], rank=2)
        perturb(model, seed=2)
        rankwise.set_active(model, ["default", "above"])
        stacked = outputs(model)
        rankwise.merge(model)
        assert (outputs(model) - stacked).abs().max() <= TOLERANCE, kind


def test_embedding_training_leaves_the_padding_row_alone():
    model = rankwise.adapt(tiny_net(), "lora", targets=["emb"], rank=2)
    model(IDS).square().sum().backward()
    lora_A = model.emb.adapters["default"].lora_A
    assert lora_A.grad[:, 0].abs().sum() == 0 and lora_A.grad[:, 1:].abs().sum() > 0
    assert model.emb.base.weight.grad is None


def test_dilated_reflect_padded_conv_merges_but_does_not_export_to_peft(tmp_path):
    model = perturb(rankwise.adapt(tiny_net(), "dora", targets=["dilated"], rank=2))
    unmerged = outputs(model)
    rankwise.merge(model)
    assert (outputs(model) - unmerged).abs().max() <= TOLERANCE
    rankwise.unmerge(model)
    with pytest.raises(ConfigError, match="dilated is a Conv1d with dilation"):
        save_adapter(model, tmp_path / "a", format="peft")


def test_other_methods_refuse_these_kinds_naming_layer_and_kind():
    for method in rankwise.ADAPTERS.names():
        if method in ("lora", "rslora", "dora"):
            continue
        fields = {"rank": 2} if "rank" in rankwise.ADAPTERS.get(method).config_class.field_names() else {}
        for target, kind in (("conv2", "Conv2d"), ("emb", "Embedding")):
            with pytest.raises(TargetError, match=rf"^{target} is a {kind}; {method} adapts .* only\.$"):
                rankwise.adapt(tiny_net(), method, targets=[target], **fields)
        with pytest.raises(TargetError, match=rf"c_attn is a Conv1D; {method} adapts"):
            rankwise.adapt(tiny_gpt2(), method, targets=["c_attn"], **fields)


def test_unsupported_configurations_are_refused():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Embedding(10, 4, max_norm=1.0))
    with pytest.raises(ConfigError, match="^0: a Conv2d with groups=2"):
        rankwise.adapt(model, "lora", targets=["0"], rank=2)
    with pytest.raises(ConfigError, match="^1: an nn.Embedding with max_norm=1.0"):
        rankwise.adapt(model, "lora", targets=["1"], rank=2)
    with pytest.raises(TargetError, match="lora adapts nn.Linear layers, transformers' Conv1D, nn.Embedding"):
        rankwise.adapt(nn.Sequential(nn.ConvTranspose2d(4, 4, 3)), "lora", targets=["0"], rank=2)


def test_merging_into_a_tied_embedding_is_refused():
    model = perturb(rankwise.adapt(tiny_gpt2(tied=True), "lora", targets=["wte"], rank=2))
    assert model.lm_head.weight is model.transformer.wte.base.weight
    unmerged = outputs(model)
    with pytest.raises(NotMergeable, match="transformer.wte's weight is tied to lm_head's"):
        rankwise.merge(model)
    with pytest.raises(NotMergeable, match="tied"):
        rankwise.unload(model, merge=True)
    assert torch.equal(outputs(model), unmerged)
