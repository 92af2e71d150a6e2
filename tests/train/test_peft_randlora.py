"""rankwise's RandLoRA and PEFT's on shared numbers: the same update on every layer and the same logits."""

from __future__ import annotations

import warnings

import pytest
import torch

peft = pytest.importorskip("peft")

from rankwise.adapters import layers_of  # noqa: E402
from rankwise.adapters.randlora import random_bases  # noqa: E402
from rankwise.errors import ConfigError  # noqa: E402
from rankwise.train.peft_randlora import peft_randlora_twin, share_randlora_weights  # noqa: E402

from ..io.io_helpers import TINY_VOCAB, adapted_llama, logits, make_tiny_llama  # noqa: E402

# rank 3: n = ⌈d/3⌉ leaves a partial last basis and PEFT's shared n_max = 22 is sliced to 6 or 11
FIELDS = {"rank": 3, "alpha": 5.0, "targets": "all-linear"}


def _twin(**extra):
    ours = adapted_llama("randlora", **FIELDS, **extra)  # λ and γ perturbed: every basis column counts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ours, peft_randlora_twin(make_tiny_llama(), ours)


@pytest.mark.parametrize("peft_scaling", [True, False])
def test_every_layer_and_the_logits_agree(peft_scaling):
    ours, theirs = _twin(peft_scaling=peft_scaling)
    layers = layers_of(ours, "default")
    assert {(a.in_features > a.out_features) for a in layers.values()} == {True, False}  # both orientations
    for path, adapter in layers.items():
        peft_layer = theirs.base_model.model.get_submodule(path)
        torch.testing.assert_close(peft_layer.get_delta_weight("default"), adapter.delta_weight(),
                                   rtol=1e-5, atol=1e-6)
        assert adapter.delta_weight().abs().max() > 1e-3
    ids = torch.randint(0, TINY_VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    ours_logits, base_logits = logits(ours, ids), logits(make_tiny_llama(), ids)
    assert (logits(theirs, ids) - ours_logits).abs().max() <= 1e-5
    assert (ours_logits - base_logits).abs().max() > 1e-2  # the adapter really changes the output


def test_a_wrong_basis_layout_would_be_caught():
    ours, theirs = _twin(peft_scaling=True)
    adapter = next(iter(layers_of(ours, "default").values()))
    large, columns = adapter.basis_B.shape
    rank = adapter.lam.shape[0]
    # PEFT's (D, n, rank) read as (D, rank, n): the same numbers, paired with the wrong rows of S
    adapter.basis_B = adapter.basis_B.reshape(large, columns // rank, rank).transpose(1, 2).reshape(large, -1)
    ids = torch.randint(0, TINY_VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    assert (logits(theirs, ids) - logits(ours, ids)).abs().max() > 1e-3


def test_rankwise_cached_bases_are_left_untouched():
    adapter = next(iter(layers_of(adapted_llama("randlora", **FIELDS), "default").values()))
    small, large = sorted((adapter.in_features, adapter.out_features))
    key = (0, 3, adapter.n_bases, small, large, False)
    before = [t.clone() for t in random_bases(*key)]
    _twin()
    for cached, kept in zip(random_bases(*key), before, strict=True):
        assert torch.equal(cached, kept)


@pytest.mark.parametrize("peft_config, message", [
    ({"r": 4, "randlora_alpha": 5.0}, "no RandLoRA layer of rank 3"),
    ({"r": 3, "randlora_alpha": 7.0}, "scaling"),
])
def test_a_twin_of_another_rank_or_alpha_is_refused(peft_config, message):
    ours = adapted_llama("randlora", **FIELDS, peft_scaling=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(make_tiny_llama(), peft.RandLoraConfig(
            target_modules="all-linear", **peft_config))
    with pytest.raises(ConfigError, match=message):
        share_randlora_weights(ours, theirs)
