"""convert_to_lora: each layer's full update merged_weight(W) − W, cut by SVD, as a plain LoRA of scale 1.

Checked against direct computations: the update read off a merged model, numpy's SVD of it, and PEFT's
convert_to_lora on the same LoRA."""

import json
import warnings

import numpy as np
import pytest
import torch

import rankwise
from rankwise.adapters import active_adapters, adapter_names, layers_of
from rankwise.adapters.convert import REPORT_FILE, convert_to_lora, save_converted
from rankwise.errors import ConfigError, NotMergeable
from rankwise.surgery import CompressedLinear
from tests.conftest import make_tiny_llama

# Methods with different kinds of update: low rank, a transformed W (DoRA's norms, TLoRA's T W), a
# residual against a saved start (PiSSA), full rank (full).
METHODS = {"lora": {"rank": 4}, "dora": {"rank": 4}, "pissa": {"rank": 4}, "tlora": {}, "full": {}}


def _trained(method: str, **fields):
    """A tiny Llama with `method` on its linear layers and every adapter tensor moved off its init."""
    model = make_tiny_llama()
    rankwise.adapt(model, method, **{**METHODS.get(method, {}), **fields})
    return _perturbed(model)


@torch.no_grad()
def _perturbed(model):
    generator = torch.Generator().manual_seed(1)
    for param in model.parameters():
        if param.requires_grad:
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


@torch.no_grad()
def _updates(model) -> dict[str, torch.Tensor]:
    """{path: merged weight − base weight}, read off the model itself."""
    paths = list(layers_of(model, "default"))
    before = {p: model.get_submodule(p).weight.detach().clone() for p in paths}
    rankwise.merge(model)
    after = {p: model.get_submodule(p).weight.detach().clone() for p in paths}
    rankwise.unmerge(model)
    return {p: (after[p] - before[p]).double() for p in paths}


@torch.no_grad()
def _merged_output(model, ids):
    rankwise.merge(model)
    out = model(ids)
    rankwise.unmerge(model)
    return out


@pytest.mark.parametrize("method", list(METHODS))
def test_full_rank_reproduces_the_merged_model(method, tiny_ids, one_thread):
    model = _trained(method)
    expected = _merged_output(model, tiny_ids).logits
    report = convert_to_lora(model, rank=64)
    assert adapter_names(model) == ["default"]
    assert {type(a).name for a in layers_of(model, "default").values()} == {"lora"}
    assert all(row["rank"] == min(row["shape"]) for row in report["layers"].values())
    assert report["relative_error"] < 1e-6 and report["method"] == method
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_ids).logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["dora", "tlora", "full"])
def test_lower_rank_error_is_the_truncation_error(method, one_thread):
    model = _trained(method)
    updates = _updates(model)
    report = convert_to_lora(model, rank=2)
    for path, delta in updates.items():
        U, S, Vh = torch.linalg.svd(delta)
        cut = (U[:, :2] * S[:2]) @ Vh[:2]
        direct = float((delta - cut).norm() / delta.norm())
        assert report["layers"][path]["rank"] == 2
        assert report["layers"][path]["relative_error"] == pytest.approx(direct, rel=1e-4)
        assert direct > 1e-3  # the cut loses something: a real test of the number
        lora = layers_of(model, "default")[path]
        assert lora.scale == 1.0
        torch.testing.assert_close(lora.delta_weight().double(), cut, atol=1e-5, rtol=0)
    lost = sum(float((d - _cut(d, 2)).norm() ** 2) for d in updates.values())
    total = sum(float(d.norm() ** 2) for d in updates.values())
    assert report["relative_error"] == pytest.approx((lost / total) ** 0.5, rel=1e-4)


def _cut(delta, rank):
    U, S, Vh = torch.linalg.svd(delta)
    return (U[:, :rank] * S[:rank]) @ Vh[:rank]


def test_energy_picks_per_layer_ranks_by_hand_and_saves_them(tmp_path, tiny_ids, one_thread):
    model = _trained("dora")
    updates = _updates(model)
    report = convert_to_lora(model, energy=0.9)
    by_hand = {}
    for path, delta in updates.items():
        squares = np.linalg.svd(delta.numpy(), compute_uv=False) ** 2
        by_hand[path] = int(np.argmax(np.cumsum(squares) / squares.sum() >= 0.9)) + 1
        assert report["layers"][path]["energy_kept"] >= 0.9
    assert {path: row["rank"] for path, row in report["layers"].items()} == by_hand
    assert len(set(by_hand.values())) > 1  # a real per-layer pattern
    lora = layers_of(model, "default")
    assert {path: a.lora_A.shape[0] for path, a in lora.items()} == by_hand
    save_converted(model, tmp_path / "out", report)
    assert json.loads((tmp_path / "out" / REPORT_FILE).read_text())["layers"] == report["layers"]
    loaded = rankwise.load_adapter(make_tiny_llama(), tmp_path / "out")
    assert {p: a.lora_A.shape[0] for p, a in layers_of(loaded, "default").items()} == by_hand
    with torch.no_grad():
        torch.testing.assert_close(loaded(tiny_ids).logits, model(tiny_ids).logits, atol=1e-6, rtol=0)


def test_into_another_name_keeps_the_original_and_copies_modules_to_save(tiny_ids, one_thread):
    model = _trained("dora", modules_to_save=["lm_head"])
    expected = _merged_output(model, tiny_ids).logits
    report = convert_to_lora(model, rank=64, into="as-lora")
    assert report["modules_to_save"] == ["lm_head"]
    assert adapter_names(model) == ["default", "as-lora"]
    assert active_adapters(model) == ["as-lora"]
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_ids).logits, expected, atol=1e-5, rtol=0)


def test_refuses_non_mergeable_methods_and_careless_choices(one_thread):
    model = make_tiny_llama()
    rankwise.adapt(model, "vglora", rank=2)
    with pytest.raises(NotMergeable, match="not a fixed weight delta"):
        convert_to_lora(model, rank=2)
    assert {type(a).name for a in layers_of(model, "default").values()} == {"vglora"}
    model = _trained("lora")
    for choice, words in (({"rank": 2, "energy": 0.9}, "not both"), ({}, "or neither"),
                          ({"energy": 1.5}, r"in \(0, 1\]"), ({"rank": 0}, "positive integer")):
        with pytest.raises(ConfigError, match=words):
            convert_to_lora(model, **choice)


def test_matches_peft_convert_to_lora_on_a_lora(tmp_path, one_thread):
    peft = pytest.importorskip("peft")
    if not hasattr(peft, "convert_to_lora"):
        pytest.skip("this PEFT has no convert_to_lora")
    model = _trained("lora", alpha=8, targets=["q_proj", "v_proj"])  # scale 2: the factors are not B, A
    rankwise.save_adapter(model, tmp_path / "peft", format="peft")
    peft_model = peft.PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "peft")
    for choice, peft_rank in (({"rank": 2}, 2), ({"energy": 0.8}, 0.8)):
        with warnings.catch_warnings():  # PEFT: "there is typically no need" to convert a LoRA
            warnings.simplefilter("ignore")
            config, state = peft.convert_to_lora(peft_model, peft_rank)
        ours = _trained("lora", alpha=8, targets=["q_proj", "v_proj"])
        report = convert_to_lora(ours, **choice)
        for path, lora in layers_of(ours, "default").items():
            A, B = (state[f"base_model.model.{path}.lora_{x}.weight"] for x in "AB")
            assert A.shape[0] == report["layers"][path]["rank"]
            alpha = config.alpha_pattern.get(path, config.lora_alpha)
            assert alpha == config.rank_pattern.get(path, config.r)  # PEFT's scale is 1 too
            torch.testing.assert_close(lora.delta_weight(), B @ A, atol=1e-5, rtol=0)


class _Kinds(torch.nn.Module):
    """An embedding, a conv and a linear layer: every layer kind LoRA and DoRA adapt."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.conv = torch.nn.Conv1d(8, 6, kernel_size=3, padding=1)
        self.head = torch.nn.Linear(6, 5)

    def forward(self, ids):
        return self.head(self.conv(self.embed(ids).transpose(1, 2)).transpose(1, 2))


def test_embeddings_and_convs_convert_in_their_own_layout(one_thread):
    torch.manual_seed(0)
    model = _Kinds()
    rankwise.adapt(model, "dora", rank=2, targets=["embed", "conv", "head"])
    _perturbed(model)
    ids = torch.randint(0, 20, (2, 7), generator=torch.Generator().manual_seed(2))
    expected = _merged_output(model, ids)
    report = convert_to_lora(model, rank=64)
    assert {p: row["shape"] for p, row in report["layers"].items()} == {
        "embed": [8, 20], "conv": [6, 24], "head": [5, 6]}
    with torch.no_grad():
        torch.testing.assert_close(model(ids), expected, atol=1e-5, rtol=0)


def test_a_quantized_base_keeps_its_codes_and_the_update_is_taken_against_them(tiny_ids, one_thread):
    model = make_tiny_llama()
    rankwise.compress(model, "rtn", bits=4, group_size=16)
    rankwise.adapt(model, "dora", rank=4)
    _perturbed(model)
    codes = {k: v.clone() for k, v in model.model.layers[0].self_attn.q_proj.base.state_dict().items()}
    with torch.no_grad():
        expected = model(tiny_ids).logits  # unmerged: merging would requantize
    report = convert_to_lora(model, rank=64)
    assert report["relative_error"] < 1e-6
    base = model.model.layers[0].self_attn.q_proj.base
    assert isinstance(base, CompressedLinear)
    assert all(torch.equal(value, codes[key]) for key, value in base.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_ids).logits, expected, atol=1e-5, rtol=0)
