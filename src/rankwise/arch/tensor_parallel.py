"""Tensor parallelism for the standard and the Ladder Residual models, on PyTorch's own engine
(torch.distributed.tensor.parallel: DeviceMesh, DTensor, ColwiseParallel / RowwiseParallel).

Ladder Residual (Zhang, Mishra, Zhou, Brandon, Wang, Kim, Ragan-Kelley, Song, Athiwaratkun, Dao,
"Ladder-residual: parallelism-aware architecture for accelerating large model inference with
communication overlapping", ICML 2025) exists for this setting: under tensor parallelism each module's
output is a partial sum that must be all-reduced, and the ladder gives that all-reduce a whole module of
compute to finish behind.

What is sharded how (Megatron's layout; p = the mesh size):
    self_attn.q_proj, k_proj, v_proj   ColwiseParallel: each rank holds H/p query and K/p key/value heads
    self_attn.o_proj                   RowwiseParallel: its output is Σ over ranks → all-reduce
    mlp.gate_proj, up_proj             ColwiseParallel: I/p of the MLP width
    mlp.down_proj                      RowwiseParallel: all-reduce
    norms, embeddings, head            replicated: every rank computes them whole
Hugging Face's Llama attention reshapes with (*input_shape, -1, head_dim), so the local projections give
it H/p heads with no attribute to change (num_key_value_groups = H/K is the same on every rank). The
attention's and the MLP's inputs enter once as replicated DTensors (PrepareModuleInput), so in the
backward pass the input gradients of q, k, v (gate, up) add up as one partial sum and are all-reduced
once per module, not once per projection.

Where the communication happens and where it is waited on. RowwiseParallel ends with
redistribute(Partial → Replicate, async_op=True): torch.distributed._functional_collectives.all_reduce
launches the collective and returns an AsyncCollectiveTensor, which calls wait_tensor only at the first
operation that reads its values (view ops do not). So the wait sits wherever the model first uses the
module's output:
    standard   h ← h + Attn(Norm₁(h)): the very next op reads it; launch and wait are back to back.
    ladder     r ← r + a_{i−1}: a_i is first read at the start of block i+1, after MLP_i has run; m_i at
               r ← r + m_i in block i+1, after Attn_{i+1} has run; only the last m_L is waited at once.
No code here launches or waits: the ladder's data flow alone moves each wait one module later, which
tests/arch/test_tensor_parallel.py checks on the AsyncCollectiveTensors themselves. The backward pass's
all-reduces (of the input gradients) are issued synchronously by DTensor in both models; the overlap
here is the forward pass, which is the paper's setting (inference).
Differences from the paper: its engine issues torch.distributed.all_reduce(async_op=True) and waits on
the handle by hand; ours relies on DTensor's lazy wait, the same schedule without new code.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    PrepareModuleInput,
    RowwiseParallel,
    parallelize_module,
)

from ..errors import ConfigError, TargetError
from ..surgery import find_targets
from .base import StreamBlock, check_pre_norm

COLUMN_SHARDED = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
ROW_SHARDED = ("self_attn.o_proj", "mlp.down_proj")


def check_shardable(config: Any, world_size: int) -> None:
    """Refuse a world size that does not divide the head counts or the MLP width (a Hugging Face config)."""
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise ConfigError(f"the tensor-parallel world size must be a positive number of processes, got "
                          f"{world_size!r}.")
    heads = config.num_attention_heads
    sizes = {"attention heads (num_attention_heads)": heads,
             "key/value heads (num_key_value_heads)": getattr(config, "num_key_value_heads", None) or heads,
             "MLP width (intermediate_size)": config.intermediate_size}
    for what, size in sizes.items():
        if size % world_size:
            fits = [p for p in range(1, heads + 1) if all(s % p == 0 for s in sizes.values())]
            raise ConfigError(f"tensor parallelism over {world_size} processes must split the {what} evenly, "
                              f"but the model has {size}; use a world size that divides the head counts and "
                              f"the MLP width ({', '.join(map(str, fits))}).")


def block_paths(model: nn.Module) -> list[str]:
    """The path of every transformer block's own module (inside rankwise.arch's wrapper when there is one),
    each checked to be a Llama-style block whose projections are plain nn.Linear layers."""
    try:
        paths = find_targets(model, "all-blocks")
    except TargetError:
        raise ConfigError(f"{type(model).__name__} has no stack of transformer blocks that tensor "
                          "parallelism can shard; give a Llama-style Hugging Face model "
                          "(model.model.layers).") from None
    bases = []
    for path in paths:
        block = model.get_submodule(path)
        if isinstance(block, StreamBlock):
            path, block = f"{path}.base", block.base
        check_pre_norm(path, block)
        odd = [name for name in COLUMN_SHARDED + ROW_SHARDED if not isinstance(_find(block, name), nn.Linear)]
        if odd:
            raise ConfigError(f"{path} is a {type(block).__name__} whose {', '.join(odd)} are not plain "
                              "nn.Linear layers; tensor parallelism shards Llama's q/k/v/o and gate/up/down "
                              "projections, so apply it to the model before adapters or compression.")
        bases.append(path)
    return bases


def _find(block: nn.Module, path: str) -> nn.Module | None:
    try:
        return block.get_submodule(path)
    except AttributeError:
        return None


def tensor_parallel_plan(model: nn.Module, world_size: int) -> dict[str, ParallelStyle]:
    """{module path: parallel style} for every block, after checking the model can be split `world_size`
    ways; needs no process group, so the checks run (and are tested) before any mesh exists."""
    paths = block_paths(model)
    check_shardable(model.config, world_size)
    replicated = Replicate()
    plan: dict[str, ParallelStyle] = {}
    for path in paths:
        # One replicated DTensor per module input: q, k, v (gate, up) then share its gradient's reduction.
        plan[f"{path}.self_attn"] = PrepareModuleInput(
            input_kwarg_layouts={"hidden_states": replicated},
            desired_input_kwarg_layouts={"hidden_states": replicated}, use_local_output=False)
        plan[f"{path}.mlp"] = PrepareModuleInput(input_layouts=(replicated,),
                                                 desired_input_layouts=(replicated,), use_local_output=False)
        plan.update({f"{path}.{name}": ColwiseParallel() for name in COLUMN_SHARDED})
        plan.update({f"{path}.{name}": RowwiseParallel() for name in ROW_SHARDED})
    return plan


def parallelize(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """Shard every block of `model` (plain, or rewired by rankwise.arch.apply) over the 1-D `mesh`, in
    place; returns the model. The sharded projections take rank 0's weights (scattered to the others); the
    rest stays each process's own, so every process must build the same model."""
    if mesh.ndim != 1:
        raise ConfigError(f"tensor parallelism takes a 1-D device mesh, got {mesh.ndim} dimensions; pass "
                          "the tensor-parallel slice (mesh['tp']).")
    plan = tensor_parallel_plan(model, mesh.size())
    parallelize_module(model, mesh, plan)
    return model
