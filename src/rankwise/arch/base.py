"""The architecture family's interface: variants of the residual stream, installed on a model's blocks.

A variant changes how each pre-norm block reads and writes the residual stream, never the block's own
attention, MLP or norms. Llama-style blocks compute

    h ← h + Attn(Norm₁(h));   h ← h + MLP(Norm₂(h))

and a variant replaces those two additions. Every block of the stack is wrapped by the variant's
StreamBlock (a rankwise.surgery.Wrapper): the original block stays as `.base`, so its tensors keep their
names (a saved model is a plain Hugging Face folder plus the variant's own tensors), adapters and
parameterizations still find its linear layers, and Hugging Face's own layer loop runs the wrappers
unchanged. What one block hands the next besides the hidden state (AttnRes's earlier outputs, the
ladder's pending outputs) lives in a Stream shared by the blocks of one model, reset by the first block
of every forward pass.

    plan  = make_plan(model, config)                      # {block path: config}, every block
    block = Variant(base, index, depth, config, stream)   # a StreamBlock; its own tensors initialised
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .._registry import Registry
from ..errors import ConfigError
from ..surgery import PlanConfig, Wrapper

# A pre-norm block as Llama, Mistral and Qwen2 name its parts: input_layernorm → self_attn and
# post_attention_layernorm → mlp. Gemma's sandwich norms also normalise the branch outputs, which
# changes what the stream receives, so those blocks are refused rather than silently misread.
PRE_NORM_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
SANDWICH_NORMS = ("pre_feedforward_layernorm", "post_feedforward_layernorm")


@dataclass
class ArchConfig(PlanConfig):
    """Every variant rewires the whole stack, so the plan is every block ("all-blocks"); a variant that
    converts part of it says which part in its own fields (the ladder's `upper`)."""

    targets: Any = "all-blocks"

    def check_depth(self, depth: int) -> None:
        """Refuse settings that do not fit a stack of `depth` blocks (a variant adds its own checks)."""


class Stream:
    """What one forward pass carries from block to block besides the hidden state."""

    def __init__(self) -> None:
        self.sources: list[torch.Tensor] = []  # AttnRes: values, or completed blocks
        self.partial: torch.Tensor | None = None  # Block AttnRes: the running sum of the current block
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None  # ladder: (a_{i-1}, m_{i-1})


class StreamBlock(Wrapper):
    """A pre-norm block whose residual additions a variant redefines in forward()."""

    config_class: ClassVar[type[ArchConfig]] = ArchConfig
    name: ClassVar[str]
    paper: ClassVar[str] = ""
    url: ClassVar[str] = ""

    def __init__(self, base: nn.Module, index: int, depth: int, config: ArchConfig, stream: Stream):
        super().__init__()
        self.base, self.index, self.depth, self.config = base, index, depth, config
        self.__dict__["stream"] = stream  # shared by every block; kept out of the module tree

    @property
    def width(self) -> int:
        return self.base.post_attention_layernorm.weight.shape[-1]

    def attention(self, h: torch.Tensor, kwargs: dict, normalize: bool = True) -> torch.Tensor:
        """Attn(Norm₁(h)) with the mask, positions and cache Hugging Face's layer loop passed."""
        x = self.base.input_layernorm(h) if normalize else h
        return self.base.self_attn(hidden_states=x, **kwargs)[0]

    def feed_forward(self, h: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """MLP(Norm₂(h))."""
        return self.base.mlp(self.base.post_attention_layernorm(h) if normalize else h)

    def own_state(self) -> dict[str, torch.Tensor]:
        """The variant's own tensors (the base block's are the model's)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("base.")}

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base":
                raise
            return getattr(self.base, name)  # attributes model code reads off a layer (attention_type, ...)


ARCHS: Registry[type[StreamBlock]] = Registry("architecture variant")


def check_pre_norm(path: str, block: nn.Module) -> None:
    missing = [part for part in PRE_NORM_PARTS if not hasattr(block, part)]
    sandwich = [part for part in SANDWICH_NORMS if hasattr(block, part)]
    if missing or sandwich:
        found = f"it lacks {', '.join(missing)}" if missing else f"it has {', '.join(sandwich)}"
        raise ConfigError(
            f"{path} is a {type(block).__name__}, which rankwise.arch cannot read as a pre-norm attention + "
            f"MLP block ({found}). The variants rewire Llama-style blocks (input_layernorm → self_attn, "
            "post_attention_layernorm → mlp: Llama, Mistral, Qwen2, SmolLM2, rankwise pretrain's models).")
