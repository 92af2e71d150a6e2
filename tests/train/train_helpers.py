"""Tiny, fast training setups shared by the training-loop tests (no tokenizer, no files)."""

from __future__ import annotations

import torch

import rankwise
from rankwise.adapters import layers_of
from rankwise.train import TrainConfig

from ..conftest import TINY_VOCAB, make_tiny_llama


def synthetic_features(n: int = 12, length: int = 8, prompt: int = 3, seed: int = 0) -> list[dict]:
    """Equal-length token rows whose first `prompt` labels are masked, like encode_example's output."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(1, TINY_VOCAB, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def tiny_config(output_dir, **overrides) -> TrainConfig:
    values = dict(model="tiny-llama", task="iso-dates", rank=4, dropout=0.1, max_steps=6,
                  per_device_train_batch_size=3, gradient_accumulation_steps=2, learning_rate=1e-2,
                  warmup_steps=2, output_dir=str(output_dir), progress=False, init_batches=2)
    values.update(overrides)
    return TrainConfig(**values)


def adapted_tiny_llama(config: TrainConfig, seed: int = 0):
    model = make_tiny_llama(seed)
    torch.manual_seed(seed)
    return rankwise.adapt(model, config.method, name=config.adapter_name, config=config.adapter_config())


def adapter_tensors(model, name: str = "default") -> dict[str, torch.Tensor]:
    return {f"{path}.{k}": v.detach().clone() for path, a in layers_of(model, name).items()
            for k, v in a.state_dict().items()}
