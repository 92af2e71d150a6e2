"""Tiny models with each layer kind LoRA adapts, and PEFT twins of their adapters, for test_layer_kinds."""

from __future__ import annotations

import peft
import torch
import transformers
from torch import nn

import rankwise
from rankwise.adapters import layers_of

VOCAB = 20
PEFT_FLAGS = {"lora": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True}}


class TinyNet(nn.Module):
    """Each layer kind once: ids -> Embedding -> Conv1d -> Conv2d -> Conv3d, plus a dilated, reflect-padded
    conv (which PEFT's conv LoRA does not reproduce)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8, padding_idx=0)
        self.conv1 = nn.Conv1d(8, 6, 3, padding=1)
        self.dilated = nn.Conv1d(6, 6, 3, dilation=2, padding=2, padding_mode="reflect")
        self.conv2 = nn.Conv2d(1, 4, (3, 2), stride=(1, 2), padding=1)
        self.conv3 = nn.Conv3d(4, 3, 2, bias=False)

    def forward(self, ids):
        hidden = self.dilated(self.conv1(self.emb(ids).transpose(1, 2)))
        hidden = self.conv2(hidden.unsqueeze(1))
        return self.conv3(hidden.unsqueeze(2).repeat(1, 1, 2, 1, 1)).flatten(1)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyNet().eval()


def tiny_gpt2(seed: int = 0, tied: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=16,
                                     bos_token_id=0, eos_token_id=0, tie_word_embeddings=tied)
    return transformers.GPT2LMHeadModel(config).eval()


# kind -> (model factory, target leaf name)
KINDS = {"embedding": (tiny_net, "emb"), "conv1d": (tiny_net, "conv1"), "conv2d": (tiny_net, "conv2"),
         "conv3d": (tiny_net, "conv3"), "gpt2-conv1d": (tiny_gpt2, "c_attn"),
         "gpt2-embedding": (tiny_gpt2, "wte")}
IDS = torch.tensor([[0, 3, 5, 7, 19, 2, 0, 11], [4, 4, 9, 1, 0, 13, 17, 6]])  # 0 is the padding id


@torch.no_grad()
def outputs(model: nn.Module) -> torch.Tensor:
    out = model(IDS)
    return getattr(out, "logits", out)


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 1) -> nn.Module:
    """Move every trainable tensor off its init (B and the magnitude too), so nothing passes trivially."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model


def adapted(kind: str, method: str, seed: int = 0) -> nn.Module:
    make, target = KINDS[kind]
    return perturb(rankwise.adapt(make(seed), method, targets=[target], rank=2, alpha=6.0))


@torch.no_grad()
def copy_into_peft(ours: nn.Module, theirs: nn.Module) -> None:
    """Give PEFT's layers our factors, mapped by hand to PEFT's names and shapes (not through our export)."""
    for path, adapter in layers_of(ours, "default").items():
        layer = theirs.base_model.model.get_submodule(path)
        if adapter.layer_shape.kind == "embedding":
            layer.lora_embedding_A["default"].copy_(adapter.lora_A)
            layer.lora_embedding_B["default"].copy_(adapter.lora_B)
        else:
            for mine, their in ((adapter.lora_A, layer.lora_A), (adapter.lora_B, layer.lora_B)):
                their["default"].weight.copy_(mine.reshape(their["default"].weight.shape))
        if hasattr(adapter, "magnitude"):
            magnitude = layer.lora_magnitude_vector["default"].weight
            magnitude.copy_(adapter.magnitude.reshape(magnitude.shape))


def peft_twin(kind: str, method: str) -> nn.Module:
    make, target = KINDS[kind]
    config = peft.LoraConfig(r=2, lora_alpha=6, target_modules=[target], fan_in_fan_out=kind == "gpt2-conv1d",
                             **PEFT_FLAGS[method])
    return peft.get_peft_model(make(0), config).eval()
