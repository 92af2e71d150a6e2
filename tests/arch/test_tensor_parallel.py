"""Tensor parallelism on torch's own engine: the 2-process standard and ladder models compute what the
single process does, and the ladder waits on each module's all-reduce one module later.

Also runnable as the worker: torchrun --nproc_per_node 2 -m tests.arch.test_tensor_parallel OUT
shards the tiny scratch Llama, plain and as a ladder, and writes each process's logits to
OUT/<variant>-rank<r>.safetensors and what it saw to OUT/<variant>-rank<r>.json.
"""

import copy
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig

from rankwise import arch
from rankwise.arch.tensor_parallel import block_paths, check_shardable, tensor_parallel_plan
from rankwise.errors import ConfigError
from rankwise.models.scratch import byte_tokenizer, scratch_llama

from ..conftest import run_two_processes

VARIANTS = ("standard", "ladder")


def tiny(variant: str) -> nn.Module:
    model = scratch_llama("tiny", byte_tokenizer(), seed=0).eval()
    return arch.apply(model, "ladder") if variant == "ladder" else model


def token_ids() -> torch.Tensor:
    return torch.randint(3, 259, (2, 24), generator=torch.Generator().manual_seed(5))


def test_world_sizes_that_do_not_divide_the_heads_or_the_mlp_are_refused():
    config = LlamaConfig(hidden_size=128, intermediate_size=352, num_attention_heads=4, num_key_value_heads=2)
    check_shardable(config, 2)
    with pytest.raises(ConfigError, match=r"attention heads .* has 4; .*\(1, 2\)"):
        check_shardable(config, 3)
    with pytest.raises(ConfigError, match=r"key/value heads .* has 2"):
        check_shardable(config, 4)
    config.intermediate_size = 351
    with pytest.raises(ConfigError, match=r"MLP width .* has 351"):
        check_shardable(config, 2)
    with pytest.raises(ConfigError, match="positive number"):
        check_shardable(config, 0)


def test_the_plan_checks_sizes_before_any_process_group_exists():
    with pytest.raises(ConfigError, match="attention heads"):
        tensor_parallel_plan(tiny("standard"), 3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_plan_shards_the_blocks_own_projections(variant):
    model = tiny(variant)
    inner = ".base" if variant == "ladder" else ""
    assert block_paths(model) == [f"model.layers.{i}{inner}" for i in range(4)]
    plan = tensor_parallel_plan(model, 2)
    styles = {path.removeprefix(f"model.layers.1{inner}."): type(style).__name__
              for path, style in plan.items() if path.startswith(f"model.layers.1{inner}.")}
    assert styles == {"self_attn": "PrepareModuleInput", "mlp": "PrepareModuleInput",
                      "self_attn.q_proj": "ColwiseParallel", "self_attn.k_proj": "ColwiseParallel",
                      "self_attn.v_proj": "ColwiseParallel", "self_attn.o_proj": "RowwiseParallel",
                      "mlp.gate_proj": "ColwiseParallel", "mlp.up_proj": "ColwiseParallel",
                      "mlp.down_proj": "RowwiseParallel"}


def test_unrecognised_models_are_refused():
    with pytest.raises(ConfigError, match="no stack of transformer blocks"):
        tensor_parallel_plan(nn.Sequential(nn.Linear(4, 4)), 2)
    blocks = nn.Module()
    blocks.layers = nn.ModuleList(nn.TransformerEncoderLayer(8, 2) for _ in range(2))
    with pytest.raises(ConfigError, match="layers.0 is a TransformerEncoderLayer"):
        tensor_parallel_plan(blocks, 2)
    adapted = tiny("standard")
    adapted.model.layers[0].mlp.up_proj = nn.Sequential(nn.Linear(128, 352))
    with pytest.raises(ConfigError, match=r"model.layers.0 is a LlamaDecoderLayer whose mlp.up_proj"):
        tensor_parallel_plan(adapted, 2)


@pytest.mark.slow
def test_two_processes_compute_the_single_process_logits_and_the_ladder_waits_later(tmp_path):
    run_two_processes("tests.arch.test_tensor_parallel", tmp_path, timeout=300)
    for variant in VARIANTS:
        with torch.no_grad():
            expected = tiny(variant)(input_ids=token_ids()).logits
        for rank in (0, 1):
            logits = load_file(tmp_path / f"{variant}-rank{rank}.safetensors")["logits"]
            torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
            seen = json.loads((tmp_path / f"{variant}-rank{rank}.json").read_text())
            assert seen["gradient_difference"] < 1e-5  # the sharded backward too
            assert seen["asynchronous"]  # every o_proj/down_proj output was an AsyncCollectiveTensor
            # The module before whose start each output's all-reduce had been waited on:
            waited = seen["waited_before"]
            for i in range(4):
                if variant == "standard":  # at once: the next op is the residual addition
                    assert waited[f"attn{i}"] == f"mlp{i}"
                    assert waited[f"mlp{i}"] == (f"attn{i + 1}" if i < 3 else None)
                else:  # one module later: the module in between ran with the all-reduce in flight
                    assert waited[f"attn{i}"] == (f"attn{i + 1}" if i < 3 else None)
                    assert waited[f"mlp{i}"] == (f"mlp{i + 1}" if i < 3 else None)


# The worker, run under torchrun by the test above.

def watch_waits(model: nn.Module) -> tuple[dict, list]:
    """Hooks recording, for each o_proj / down_proj output, the first module at whose start its wait had
    happened (an AsyncCollectiveTensor marks itself completed when something first reads it)."""
    launched, waited_before, kinds = {}, {}, []

    def launch(name):
        def hook(module, args, output):
            kinds.append(type(output).__name__)
            launched[name] = output
        return hook

    def starting(name):
        def hook(module, *args):
            for earlier, output in launched.items():
                if earlier not in waited_before and getattr(output, "completed", True):
                    waited_before[earlier] = name
        return hook

    for i, path in enumerate(block_paths(model)):
        block = model.get_submodule(path)
        block.self_attn.o_proj.register_forward_hook(launch(f"attn{i}"))
        block.mlp.down_proj.register_forward_hook(launch(f"mlp{i}"))
        block.self_attn.register_forward_pre_hook(starting(f"attn{i}"))
        block.mlp.register_forward_pre_hook(starting(f"mlp{i}"))
    return {"launched": launched, "waited_before": waited_before}, kinds


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(input_ids=token_ids(), labels=token_ids()).loss.backward()
    return {name: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad)
            for name, p in model.named_parameters()}


def worker(out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from rankwise.arch.tensor_parallel import parallelize

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for variant in VARIANTS:
        model = tiny(variant)
        single = copy.deepcopy(model)
        parallelize(model, mesh)
        record, kinds = watch_waits(model)
        with torch.no_grad():
            logits = model(input_ids=token_ids()).logits
        waited = {name: record["waited_before"].get(name) for name in record["launched"]}
        sharded, reference = gradients(model), gradients(single)
        difference = max((sharded[k] - reference[k]).abs().max().item() for k in reference)
        save_file({"logits": logits.contiguous()}, os.path.join(out, f"{variant}-rank{rank}.safetensors"))
        seen = {"waited_before": waited, "gradient_difference": difference,
                "asynchronous": all(kind == "AsyncCollectiveTensor" for kind in kinds) and bool(kinds)}
        Path(out, f"{variant}-rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


if __name__ == "__main__":
    worker(sys.argv[1])
