"""QLoRA-style bases: quantize_base quantizes exactly the blocks' linear layers; finetune with
quantize_bits trains on them and saves an adapter that loads back onto the same quantized base (and is
refused, saying why, on the full-precision one); the bitsandbytes backend where bitsandbytes runs."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from torch import nn

import rankwise
from rankwise.adapters import adapted_layers, requantization_errors
from rankwise.compress.compact import BnbLinear, QuantizedLinear
from rankwise.errors import BaseModelMismatch, ConfigError
from rankwise.io import load_adapter
from rankwise.linalg import rtn_dequantize, rtn_quantize
from rankwise.models import load
from rankwise.train import TrainConfig, finetune, quantize_base

from ..conftest import make_tiny_llama


def test_quantize_base_quantizes_every_block_linear_and_nothing_else():
    model, original = make_tiny_llama(), make_tiny_llama()
    quantize_base(model, 4, group_size=16)
    originals = dict(original.named_modules())
    for path, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            codes, scales, zeros = rtn_quantize(originals[path].weight, 4, 16)
            torch.testing.assert_close(module.weight, rtn_dequantize(codes, scales.half().float(), zeros))
    quantized = [p for p, m in model.named_modules() if isinstance(m, QuantizedLinear)]
    assert len(quantized) == 7 * len(model.model.layers)  # q, k, v, o, gate, up, down in every block
    assert type(model.lm_head) is nn.Linear and torch.equal(model.lm_head.weight, original.lm_head.weight)
    with pytest.raises(ConfigError, match="already has compressed layers"):
        quantize_base(model, 4, group_size=16)


@pytest.mark.parametrize("overrides, words", [
    ({"quantize_bits": 5}, "quantize_bits must be one of 2, 3, 4, 8"),
    ({"quantize_bits": 4, "quantize_backend": "gptq"}, "quantize_backend must be one of"),
    ({"quantize_bits": 4, "quantize_group_size": 0}, "quantize_group_size must be a positive integer"),
    ({"quantize_bits": 3, "quantize_backend": "bitsandbytes"}, "quantize_bits must be one of 4, 8"),
])
def test_bad_quantize_settings_fail_at_construction(tmp_path, overrides, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(task="iso-dates", model="tiny-llama", output_dir=str(tmp_path), **overrides)


def test_quantization_bit_is_llama_factorys_spelling(tmp_path):
    config = TrainConfig.from_dict({"task": "iso-dates", "model": "tiny-llama", "quantization_bit": 8,
                                    "output_dir": str(tmp_path)})
    assert config.quantize_bits == 8


def test_finetune_on_a_4_bit_base_saves_an_adapter_that_loads_back_onto_it(tmp_path, cache):
    result = finetune({"model": "tiny-llama", "task": "iso-dates", "rank": 4, "max_steps": 3,
                       "per_device_train_batch_size": 2, "eval_size": 2, "max_new_tokens": 2,
                       "learning_rate": 1e-2, "quantize_bits": 4, "quantize_group_size": 16,
                       "output_dir": str(tmp_path / "run"), "progress": False})
    layers = {"QuantizedLinear(bits=4, group_size=16)": 7 * 2}  # the embedded tiny Llama has 2 blocks
    assert result["quantized_base"] == {"bits": 4, "group_size": 16, "backend": "rankwise", "layers": layers}
    meta = json.loads((tmp_path / "run" / "adapter" / "adapter.json").read_text())
    assert meta["base_model"]["compressed"] == layers
    full, _ = load("tiny-llama", tokenizer=False)
    refusal = r"its base had 14 × QuantizedLinear\(bits=4, group_size=16\), this model has no compressed"
    with pytest.raises(BaseModelMismatch, match=refusal):
        load_adapter(full, result["adapter_path"])
    quantized = quantize_base(load("tiny-llama", tokenizer=False)[0], 4, group_size=16)
    load_adapter(quantized, result["adapter_path"])
    lora_B = [m.adapters["default"].lora_B for m in adapted_layers(quantized).values()]
    assert any(b.abs().sum() > 0 for b in lora_B)  # the trained update, not a fresh zero one


def _bnb_runs_on_cpu() -> str | None:
    """Why the bitsandbytes test cannot run here, or None when it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install bitsandbytes); the rankwise backend runs above"
    try:
        BnbLinear(nn.Linear(64, 8), 4, 64).dense_weight()
    except Exception as err:  # its CPU kernels missing in this build: say which error
        return f"bitsandbytes has no CPU support here: {type(err).__name__}: {err}"
    return None


@pytest.mark.skipif(_bnb_runs_on_cpu() is not None, reason=str(_bnb_runs_on_cpu()))
@pytest.mark.parametrize("bits", [4, 8])
def test_bitsandbytes_base_trains_merges_and_unmerges(bits, tiny_ids):
    import bitsandbytes.functional as bnb

    model, original = quantize_base(make_tiny_llama(), bits, 32, "bitsandbytes"), make_tiny_llama()
    layer, weight = model.model.layers[0].self_attn.q_proj, original.model.layers[0].self_attn.q_proj.weight
    if bits == 4:
        expected = bnb.dequantize_4bit(*bnb.quantize_4bit(weight.detach(), blocksize=32, quant_type="nf4"))
    else:
        expected = bnb.int8_vectorwise_dequant(*bnb.int8_vectorwise_quant(weight.detach())[:2])
    torch.testing.assert_close(layer.weight, expected)
    rankwise.adapt(model, "lora", rank=4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(4):
        loss = model(input_ids=tiny_ids, labels=tiny_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    before = {key: value.clone() for key, value in model.state_dict().items()}
    target = model.model.layers[0].self_attn.q_proj.adapters["default"].merged_weight(layer.weight)
    rankwise.merge(model)
    stored = model.model.layers[0].self_attn.q_proj.base.weight
    error = requantization_errors(model)["model.layers.0.self_attn.q_proj"]["error"]
    assert error == pytest.approx(torch.linalg.matrix_norm(stored - target).item(), rel=1e-5)
    rankwise.unmerge(model)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in before.items())
