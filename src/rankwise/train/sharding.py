"""Sharded data parallelism (`fsdp=true`): PyTorch's FSDP2, `torch.distributed.fsdp.fully_shard`.

Each process keeps 1/W of every parameter (the frozen base included) and all-gathers a block's
parameters just before its forward and backward; gradients are reduce-scattered, so each process's
optimizer state is also 1/W. The result is the data-parallel result: the same batches, the same mean
gradient.

Why not accelerate's FSDP plugin: accelerate (1.15) accepts it only on accelerator devices; on CPU it
falls back to plain data parallelism (DistributedType.MULTI_CPU) without a word. accelerate's FSDP2
path calls the same `fully_shard`, per decoder block and then on the whole model, as here, so one
code path serves CPU (gloo) and GPU (nccl) alike; accelerate still prepares the optimizer, mixed
precision, gradient clipping and logging.

Scope: the run must shard before the optimizer is built (FSDP2 replaces each parameter with its
DTensor shard) and `unshard_for_inference` after the last step, which all-gathers every parameter back
into a plain tensor so that evaluation on the main process alone and `save_adapter` see the whole
model. Checkpoints, in-training evaluation and multi-task sequences are not sharded yet (the config
refuses them with fsdp).
"""

from __future__ import annotations

from torch import nn


def block_classes(model: nn.Module) -> set[str]:
    """The class names FSDP wraps one by one: transformers' `_no_split_modules` (its decoder blocks)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    if not names:
        raise ValueError(f"{type(model).__name__} names no decoder block class (_no_split_modules), so "
                         "there is no unit to shard; run without fsdp=true.")
    return names


def shard(model: nn.Module) -> None:
    """Shard every decoder block, then the model (the embeddings, final norm and head), across the
    default process group."""
    from torch.distributed.fsdp import fully_shard

    classes = block_classes(model)
    blocks = [m for m in model.modules() if type(m).__name__ in classes]
    for block in blocks:
        fully_shard(block)
    fully_shard(model)


def unshard_for_inference(model: nn.Module) -> None:
    """Gather every parameter whole and take FSDP off the model again (every process must call this).

    FSDP2 has no public undo: an unsharded module still reshards itself when anything reads its
    state_dict (saving an adapter does) or runs forward, and both then need every process. So after
    the all-gather each parameter is re-registered as a plain tensor, FSDP's forward and state-dict
    hooks and marks are removed and each module gets its own class back. Tested against torch 2.13's FSDP2."""
    from torch.distributed.fsdp import FSDPModule

    sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for module in sharded:
        module.unshard()  # the all-gathers, on every process
    plain: dict[int, nn.Parameter] = {}  # by identity, so tied weights (embeddings, head) stay tied
    for owner in model.modules():
        for name, param in list(owner.named_parameters(recurse=False)):
            if id(param) not in plain:
                plain[id(param)] = nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
            setattr(owner, name, plain[id(param)])
    for module in sharded:
        state = module._get_fsdp_state()
        handles = [state._pre_forward_hook_handle, state._post_forward_hook_handle]
        group = state._fsdp_param_group
        if group is not None:
            handles += [*group._module_to_pre_save_state_dict_hook_handle.values(),
                        *group._module_to_pre_load_state_dict_hook_handle.values()]
        for handle in handles:
            handle.remove()
        module.__class__ = next(c for c in type(module).__bases__ if c is not FSDPModule)
    for module in model.modules():
        # fully_shard marks every module it manages; transformers' generate reads the mark and would
        # then wait for the other processes at each new token.
        for mark in ("_is_fsdp_managed_module", "_fsdp_use_orig_params"):
            module.__dict__.pop(mark, None)
