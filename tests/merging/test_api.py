"""merge_adapters on a tiny Llama: inputs read as their full update, exact low-rank merges, dense merges
into the weights, outputs that load back, and bad inputs refused before anything changes."""

import pytest
import torch

import rankwise
from rankwise.errors import BaseModelMismatch, ConfigError, NotMergeable
from rankwise.merging import merge_adapters, read_update

from ..conftest import make_tiny_llama

TARGETS = ["q_proj", "v_proj"]


def _adapter_folder(tmp_path, name: str, method: str = "lora", seed: int = 1, base_seed: int = 0):
    """A saved adapter with a nonzero update (B drawn at random, not LoRA's zeros)."""
    model = make_tiny_llama(base_seed)
    torch.manual_seed(seed)
    rankwise.adapt(model, method, name="default", rank=2, targets=TARGETS)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    folder = tmp_path / name
    rankwise.save_adapter(model, folder)
    return folder, model


def _update_of(model) -> dict:
    return {p: a.delta_weight().detach() for p, a in rankwise.adapters.layers_of(model, "default").items()}


def test_a_lora_update_is_read_exactly_with_its_factors(tmp_path):
    folder, tuned = _adapter_folder(tmp_path, "a")
    base = make_tiny_llama(0)
    update = read_update(base, folder)
    expected = _update_of(tuned)
    assert update.low_rank and set(update.paths) == expected.keys() and not update.dense
    for path, delta in expected.items():
        torch.testing.assert_close(update.delta(path), delta)
    assert not rankwise.adapters.adapter_names(base)  # the base is left as it was


@pytest.mark.parametrize("method", ["task-arithmetic", "ties", "dare-linear", "svd", "cat"])
def test_one_input_with_weight_one_gives_it_back(tmp_path, method):
    folder, tuned = _adapter_folder(tmp_path, "a")
    model = make_tiny_llama(0)
    fields = {"weights": [1.0]} | ({"rank": 2} if method == "svd" else {})
    merge_adapters(model, [folder], method, **fields)
    ids = torch.randint(0, 64, (2, 6))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, tuned(ids).logits, atol=1e-5)


def test_cat_is_exact_and_saves_an_adapter_that_loads_back(tmp_path):
    folders = [_adapter_folder(tmp_path, n, seed=s) for n, s in (("a", 1), ("b", 2))]
    model = make_tiny_llama(0)
    result = merge_adapters(model, [f for f, _ in folders], "cat", weights=[0.7, 0.3])
    assert result["kind"] == "adapter" and result["rank"] == 4
    merged = {p: a.delta_weight() for p, a in rankwise.adapters.layers_of(model, "merged").items()}
    for path, delta in merged.items():
        want = 0.7 * _update_of(folders[0][1])[path] + 0.3 * _update_of(folders[1][1])[path]
        torch.testing.assert_close(delta, want, atol=1e-6, rtol=0)
    rankwise.save_adapter(model, tmp_path / "merged", "merged")
    fresh = rankwise.load_adapter(make_tiny_llama(0), tmp_path / "merged")
    ids = torch.randint(0, 64, (2, 6))
    with torch.no_grad():
        assert torch.allclose(fresh(ids).logits, model(ids).logits, atol=1e-6)


def test_a_dense_merge_changes_the_weights_and_a_dora_update_is_whole(tmp_path):
    lora, _ = _adapter_folder(tmp_path, "lora")
    dora, dora_model = _adapter_folder(tmp_path, "dora", method="dora", seed=3)
    base = make_tiny_llama(0)
    update = read_update(base, dora)
    assert not update.low_rank  # DoRA's magnitude: the update is merged_weight(W) - W, not B·A
    layer = dora_model.get_submodule(next(iter(update.dense)))
    weight = layer.base.weight.detach()
    torch.testing.assert_close(update.dense[next(iter(update.dense))],
                               layer.adapters["default"].merged_weight(weight) - weight)
    with pytest.raises(ConfigError, match=r"input 2 .*dora.* is not a plain LoRA"):
        merge_adapters(make_tiny_llama(0), [lora, dora], "cat")
    model = make_tiny_llama(0)
    before = model.model.layers[0].self_attn.q_proj.weight.clone()
    result = merge_adapters(model, [lora, dora], "ties", density=0.5)
    assert result["kind"] == "model" and not rankwise.adapters.adapter_names(model)
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, before)


def test_bad_inputs_are_refused_by_name_and_change_nothing(tmp_path):
    folder, _ = _adapter_folder(tmp_path, "a")
    other_base, _ = _adapter_folder(tmp_path, "other", base_seed=5)
    model = make_tiny_llama(0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(BaseModelMismatch):
        merge_adapters(model, [folder, other_base], "ties")
    with pytest.raises(ConfigError, match="2 weights for 1 inputs"):
        merge_adapters(model, [folder], "linear", weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match=r"density must be in \(0, 1\]"):
        merge_adapters(model, [folder], "ties", density=1.5)
    with pytest.raises(ConfigError, match="no such folder"):
        merge_adapters(model, [tmp_path / "missing"], "linear")
    with pytest.raises(ConfigError, match="unknown merge method"):
        merge_adapters(model, [folder], "average")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not rankwise.adapters.adapter_names(model)


def test_a_non_mergeable_input_is_refused_by_name(tmp_path):
    model = make_tiny_llama(0)
    rankwise.adapt(model, "adaptertune")
    rankwise.save_adapter(model, tmp_path / "adaptertune")
    folder, _ = _adapter_folder(tmp_path, "lora")
    with pytest.raises(NotMergeable, match=r"adaptertune: its method adaptertune cannot be folded"):
        merge_adapters(make_tiny_llama(0), [folder, tmp_path / "adaptertune"], "ties")


def test_rmm_needs_the_same_layers(tmp_path):
    a, _ = _adapter_folder(tmp_path, "a")
    model = make_tiny_llama(0)
    torch.manual_seed(0)
    rankwise.adapt(model, "lora", rank=2, targets=["q_proj"])
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.adapters["default"].lora_B.normal_()
    rankwise.save_adapter(model, tmp_path / "q-only")
    with pytest.raises(ConfigError, match="RMM needs every input to adapt the same layers"):
        merge_adapters(make_tiny_llama(0), [a, tmp_path / "q-only"], "rmm", rank=1)


def test_a_peft_folder_is_an_input_like_any_other(tmp_path):
    folder, tuned = _adapter_folder(tmp_path, "a")
    rankwise.save_adapter(tuned, tmp_path / "peft", format="peft")
    ours, theirs = read_update(make_tiny_llama(0), folder), read_update(make_tiny_llama(0), tmp_path / "peft")
    assert theirs.low_rank and ours.paths == theirs.paths
    for path in ours.paths:
        torch.testing.assert_close(theirs.delta(path), ours.delta(path))
