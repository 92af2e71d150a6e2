import pytest
from torch import nn

from rankwise.errors import TargetError
from rankwise.surgery import find_targets

from ..conftest import make_tiny_llama


def test_all_linear_skips_the_output_head():
    names = find_targets(make_tiny_llama(), "all-linear")
    assert "lm_head" not in names
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers


def test_leaf_names_globs_and_regex():
    model = make_tiny_llama()
    assert find_targets(model, ["q_proj"]) == ["model.layers.0.self_attn.q_proj",
                                               "model.layers.1.self_attn.q_proj"]
    assert find_targets(model, ["model.layers.1.*_proj"])[0] == "model.layers.1.self_attn.q_proj"
    assert find_targets(model, r".*\.0\.mlp\.(up|down)_proj") == ["model.layers.0.mlp.up_proj",
                                                                  "model.layers.0.mlp.down_proj"]
    # by type: the head is included when asked for explicitly
    assert len(find_targets(model, nn.Linear)) == 15


def test_exclude():
    names = find_targets(make_tiny_llama(), "all-linear", exclude=["*.mlp.*"])
    assert names and not any(".mlp." in n for n in names)


def test_unmatched_pattern_names_close_names():
    with pytest.raises(TargetError, match=r"'qproj'.*Close names: .*q_proj"):
        find_targets(make_tiny_llama(), ["qproj", "v_proj"])
    with pytest.raises(TargetError, match="removed by exclude"):
        find_targets(make_tiny_llama(), ["v_proj"], exclude=["v_proj"])


def test_all_blocks_are_the_decoder_layers():
    assert find_targets(make_tiny_llama(), "all-blocks") == ["model.layers.0", "model.layers.1"]
