"""Parity with mergekit (what users merge with today): the same fine-tunes, as full model folders, merged
by mergekit and by rankwise agree to 1e-5 for linear, task_arithmetic and ties; DARE's random masks
cannot agree draw for draw, so its average over seeds is compared with the expectation instead."""

import pytest
import torch
from safetensors.torch import load_file

from rankwise.merging import merge_adapters

from ..conftest import make_tiny_llama

mergekit = pytest.importorskip("mergekit")
pytestmark = pytest.mark.slow

LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The tiny base and two fine-tunes of it (random changes to every block linear layer)."""
    root = tmp_path_factory.mktemp("mergekit")
    make_tiny_llama(0).save_pretrained(root / "base")
    for index in (1, 2):
        model = make_tiny_llama(0)
        generator = torch.Generator().manual_seed(index)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(tuple(f"{m}.weight" for m in LINEAR)):
                    param.add_(torch.randn(param.shape, generator=generator) * 0.02)
        model.save_pretrained(root / f"tuned{index}")
    return root


def _mergekit(root, method: str, parameters: dict, seed: int = 0) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    out = root / f"mk-{method}-{seed}"
    settings = {"merge_method": method, "dtype": "float32",
                "models": [{"model": str(root / f"tuned{i}"), "parameters": {"weight": w, **parameters}}
                           for i, w in ((1, 0.7), (2, 0.4))]}
    if method != "linear":  # mergekit's linear averages the listed models themselves, no base
        settings["base_model"] = str(root / "base")
    config = MergeConfiguration.model_validate(settings)
    run_merge(config, str(out), MergeOptions(copy_tokenizer=False, random_seed=seed, quiet=True))
    return {k: v for k, v in load_file(out / "model.safetensors").items() if k.endswith(".weight")}


def _rankwise(root, method: str, **fields) -> dict:
    model = make_tiny_llama(0)
    merge_adapters(model, [root / "tuned1", root / "tuned2"], method, weights=[0.7, 0.4], **fields)
    return {k: v for k, v in model.state_dict().items() if k.endswith(".weight")}


@pytest.mark.parametrize("method, ours, parameters, fields", [
    ("linear", "linear", {}, {}),
    ("task_arithmetic", "task-arithmetic", {}, {}),
    ("ties", "ties", {"density": 0.5}, {"density": 0.5}),
])
def test_deterministic_merges_agree_with_mergekit(folders, method, ours, parameters, fields):
    theirs, mine = _mergekit(folders, method, parameters), _rankwise(folders, ours, **fields)
    compared = [k for k in theirs if k.endswith(tuple(f"{m}.weight" for m in LINEAR))]
    assert len(compared) == 2 * len(LINEAR)
    for key in compared:
        torch.testing.assert_close(mine[key], theirs[key], atol=1e-5, rtol=0)


def test_dare_agrees_with_mergekit_in_expectation(folders):
    """Both average, over seeds, towards the weighted sum of the updates (dare_linear's expectation)."""
    expected = _rankwise(folders, "task-arithmetic")
    base = make_tiny_llama(0).state_dict()
    key = "model.layers.0.mlp.up_proj.weight"
    seeds = range(8)
    theirs = torch.stack([_mergekit(folders, "dare_linear", {"density": 0.5}, seed)[key] for seed in seeds])
    mine = torch.stack([_rankwise(folders, "dare-linear", density=0.5, seed=seed)[key] for seed in seeds])
    target = expected[key] - base[key]
    for samples in (theirs, mine):
        error = (samples.mean(0) - base[key] - target).norm() / target.norm()
        single = (samples[0] - base[key] - target).norm() / target.norm()
        assert error < 0.6 * single  # averaging converges on the expectation (~1/√8 of one draw's error)
