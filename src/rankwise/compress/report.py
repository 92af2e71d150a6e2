"""What a compression saved: stored numbers and bytes of a model, counted the same way before and after."""

from __future__ import annotations

from torch import nn

from ..surgery import CompressedLinear


def model_size(model: nn.Module) -> dict[str, int]:
    """{"parameters", "bytes"} of everything the model stores (persistent tensors, tied ones once). A
    compressed layer counts one number per packed code or kept weight, and its real bytes."""
    compressed = {id(m) for m in model.modules() if isinstance(m, CompressedLinear)}
    values = sum(m.stored_values() for m in model.modules() if id(m) in compressed)
    size = sum(m.stored_bytes() for m in model.modules() if id(m) in compressed)
    seen = set()
    for module in model.modules():
        if id(module) in compressed:  # counted above, by its own rule
            continue
        persistent = [t for name, t in module.named_buffers(recurse=False)
                      if name not in module._non_persistent_buffers_set]
        for tensor in (*module.parameters(recurse=False), *persistent):
            if tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            values += tensor.numel()
            size += tensor.numel() * tensor.element_size()
    return {"parameters": values, "bytes": size}
