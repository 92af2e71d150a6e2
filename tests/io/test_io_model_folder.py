"""save_model / rankwise.models.load(DIR): a whole model with every family's changes, in one folder."""

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import rankwise
from rankwise._registry import FAMILIES, Family, Registry
from rankwise.errors import AdapterFileError, ConfigError
from rankwise.io import save_model
from rankwise.models import load

from ..conftest import make_tiny_llama
from .io_helpers import logits, perturb


def test_an_adapted_model_round_trips_and_stays_a_plain_hf_folder(tmp_path, tiny_ids, cache):
    from transformers import AutoModelForCausalLM

    model = make_tiny_llama()
    rankwise.adapt(model, "lora", name="first", rank=4, rank_pattern={"q_proj": 2})
    rankwise.adapt(model, "dora", name="second", rank=2, targets=["v_proj"])
    rankwise.set_active(model, ["first", "second"])
    perturb(model)
    expected = logits(model, tiny_ids)
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "model.safetensors", "rankwise.json", "rankwise.safetensors"]
    loaded, tokenizer = load(str(tmp_path / "m"))
    assert tokenizer is None
    rankwise.set_active(loaded, ["first", "second"])
    assert torch.equal(logits(loaded, tiny_ids), expected)
    assert loaded.get_submodule("model.layers.0.self_attn.q_proj").adapters["first"].config.rank == 2
    with rankwise.disabled(model), rankwise.disabled(loaded):  # the base weights are the original ones
        assert torch.equal(logits(loaded, tiny_ids), logits(model, tiny_ids))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()  # transformers alone: the base
    with rankwise.disabled(model):
        assert torch.equal(logits(plain, tiny_ids), logits(model, tiny_ids))


def test_a_merged_model_is_refused_and_a_damaged_folder_is_named(tmp_path, tiny_ids):
    model = rankwise.adapt(make_tiny_llama(), "lora", rank=4)
    rankwise.merge(model)
    with pytest.raises(ConfigError, match="unmerge first"):
        save_model(model, tmp_path / "m")
    rankwise.unmerge(model)
    save_model(model, tmp_path / "m")
    with open(tmp_path / "m" / "rankwise.safetensors", "r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\x01")
    with pytest.raises(AdapterFileError, match="rankwise.safetensors.*checksum"):
        load(str(tmp_path / "m"))


# A second family, registered by the test: it replaces nn.Linear layers by a factorized module, as
# compression will. The folder format needs nothing from it but the registry entry.
@dataclass
class HalfRankConfig:
    targets: object = "all-linear"
    exclude: tuple = ()

    def for_layer(self, path):
        return self

    def to_dict(self):
        return {"targets": self.targets, "exclude": list(self.exclude)}

    @classmethod
    def from_dict(cls, values, dropped=()):
        return cls(**values)


class Factorized(nn.Module):
    config_class = HalfRankConfig

    def __init__(self, linear: nn.Linear):
        super().__init__()
        rank = min(linear.weight.shape) // 2
        U, S, Vh = torch.linalg.svd(linear.weight.detach(), full_matrices=False)
        self.A = nn.Parameter(S[:rank, None] * Vh[:rank])
        self.B = nn.Parameter(U[:, :rank].clone())
        self.bias = linear.bias

    def forward(self, x):
        return nn.functional.linear(nn.functional.linear(x, self.A), self.B, self.bias)


METHODS = Registry("test method")
METHODS.register("half-rank")(Factorized)


def _apply(model, method, name, config, plan, state, source):
    built = {path: Factorized(model.get_submodule(path)) for path in plan}
    for path, module in built.items():
        if state is not None:
            module.load_state_dict(
                {k[len(path) + 1:]: v for k, v in state.items() if k.startswith(path + ".")}
            )
        rankwise.surgery.replace_module(model, path, module)
    model.half_rank = (config, plan)


def _layout(model, name):
    config, plan = model.half_rank
    state = {f"{path}.{k}": v for path in plan for k, v in model.get_submodule(path).state_dict().items()}
    return "half-rank", config, plan, state


@pytest.fixture
def half_rank_family():
    family = Family("test-factorized", METHODS, apply=_apply, layout=_layout,
                    installed=lambda model: ["default"] if hasattr(model, "half_rank") else [],
                    order=0, replaces=True)
    FAMILIES._items[family.name] = family
    yield family
    del FAMILIES._items[family.name]


def test_another_family_saves_and_loads_through_the_same_folder(tmp_path, tiny_ids, half_rank_family):
    model = make_tiny_llama()
    config = HalfRankConfig(targets=["mlp.up_proj", "mlp.down_proj"])
    plan = {path: config for path in rankwise.surgery.make_plan(model, config)}
    _apply(model, "half-rank", "default", config, plan, None, None)
    expected = logits(model, tiny_ids)
    save_model(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "rankwise.json").read_text())
    assert [r["family"] for r in meta["records"]] == ["test-factorized"]
    loaded, _ = load(str(tmp_path / "m"))
    assert isinstance(loaded.get_submodule("model.layers.1.mlp.up_proj"), Factorized)
    assert torch.equal(logits(loaded, tiny_ids), expected)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as handle:
        assert not any("up_proj" in key for key in handle.keys())  # the replaced layers are not in the base


@pytest.mark.slow
def test_smollm2_with_an_adapter_and_its_tokenizer_round_trips(tmp_path, cache):
    model, tokenizer = load("smollm2-135m")  # tied embeddings: lm_head is embed_tokens
    rankwise.adapt(model, "lora", rank=4, targets=["q_proj", "v_proj"], layers_to_transform=[0, 29])
    perturb(model)
    ids = tokenizer("Convert the date to ISO format.", return_tensors="pt").input_ids
    expected = logits(model, ids)
    save_model(model, tmp_path / "m", tokenizer)
    loaded, loaded_tokenizer = load(str(tmp_path / "m"))
    assert (
        loaded_tokenizer("Convert the date to ISO format.", return_tensors="pt").input_ids.tolist()
        == ids.tolist()
    )
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(logits(loaded, ids), expected)
