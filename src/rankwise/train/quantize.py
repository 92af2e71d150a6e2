"""QLoRA-style bases: a model's linear layers quantized before an adapter is attached (TrainConfig's
quantize_bits, quantize_group_size and quantize_backend; in Python, quantize_base).

Which layers: every nn.Linear that `all-linear` selects, i.e. each block's projections, whatever the
adapter targets, since the memory saved is the frozen base's; lm_head, the embeddings and the norms stay
in full precision, as in QLoRA. (GPT-2-style Conv1D layers stay too: neither backend quantizes them.)
Backends:
- "rankwise": group-wise round-to-nearest, rankwise.compress(model, "rtn", bits, group_size): codes packed
  at `bits` (2, 3, 4 or 8), a float16 scale and a uint8 zero per group. The model carries a compress
  record, so save_model writes the quantized base.
- "bitsandbytes": bitsandbytes' NF4 (4 bits, one absmax per block of group_size = 32, 64, ... 4096) or
  LLM.int8 (8 bits, one absmax per row; group_size unused) in compress.compact.BnbLinear. Needs
  `pip install bitsandbytes` (0.50 runs on CPU). No compress record: save_model cannot write this base.
Both quantizations are deterministic, so quantizing the same base the same way again gives the identical
codes, and an adapter trained on it loads back onto it; adapter.json's fingerprint lists the quantized
layers ("compressed"), so loading onto the full-precision base is refused with a message saying which
quantization to redo (or allow_base_mismatch=True puts it on the full-precision weights anyway).
Both rebuild the dense weight in the backward pass instead of keeping one per layer (compress.compact).
"""

from __future__ import annotations

import importlib.util

from torch import nn

from ..errors import ConfigError
from ..linalg import SUPPORTED_BITS
from ..surgery import CompressedLinear, find_targets, replace_module

BACKENDS = ("rankwise", "bitsandbytes")
BNB_BITS = (4, 8)
BNB_BLOCK_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # what bitsandbytes' 4-bit kernels accept


def check_quantize_settings(bits: int | None, group_size: int, backend: str) -> None:
    """Raise ConfigError, naming the key, for settings quantize_base would reject (before any loading)."""
    if backend not in BACKENDS:
        raise ConfigError(f"quantize_backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if group_size < 1:
        raise ConfigError(f"quantize_group_size must be a positive integer, got {group_size}.")
    if bits is None:
        return
    allowed = SUPPORTED_BITS if backend == "rankwise" else BNB_BITS
    if bits not in allowed:
        raise ConfigError(f"quantize_bits must be one of {', '.join(map(str, allowed))} with the {backend} "
                          f"backend, got {bits}.")
    if backend == "bitsandbytes":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("quantize_backend=bitsandbytes needs the bitsandbytes package; pip install "
                              "bitsandbytes, or use quantize_backend=rankwise (group-wise RTN).")
        if bits == 4 and group_size not in BNB_BLOCK_SIZES:
            raise ConfigError(f"bitsandbytes' 4-bit blocks hold {', '.join(map(str, BNB_BLOCK_SIZES))} "
                              f"values; quantize_group_size={group_size} is none of them.")


def linear_paths(model: nn.Module) -> list[str]:
    """The layers quantize_base quantizes: the nn.Linear ones among what all-linear selects."""
    return [path for path in find_targets(model, "all-linear")
            if type(model.get_submodule(path)) is nn.Linear]


def quantize_base(model: nn.Module, bits: int, group_size: int = 64, backend: str = "rankwise",
                  progress: bool = False) -> nn.Module:
    """Quantize `model`'s linear layers in place (see the module's docstring); returns the model."""
    from ..compress.compact import BnbLinear

    check_quantize_settings(bits, group_size, backend)
    if any(isinstance(module, CompressedLinear) for module in model.modules()):
        raise ConfigError("the model already has compressed layers (a `rankwise compress` folder?); train on "
                          "it without quantize_bits, or start from the full-precision model.")
    paths = linear_paths(model)
    if not paths:
        raise ConfigError("the model has no nn.Linear layer for quantize_bits to quantize.")
    if backend == "rankwise":
        from ..compress import compress

        return compress(model, "rtn", bits=bits, group_size=group_size, targets=paths, progress=progress)
    built = {path: BnbLinear(model.get_submodule(path), bits, group_size) for path in paths}
    for path, layer in built.items():  # all built first: a failure leaves the model as it was
        replace_module(model, path, layer)
    return model
