"""LoRA-Squeeze, post-hoc mode (Post-Squeeze): "LoRA-Squeeze: Simple and Effective Post-Tuning and In-Tuning
Compression of LoRA Modules" (Vulić, Grycner, de Laroussilhe, Pfeiffer, 2026, arXiv 2602.10993).

A trained LoRA (or rsLoRA) of rank r_src, with update s B A per layer, becomes a plain LoRA of rank r:
    s B A ≈ U_r Σ_r V_rᵀ  (truncated SVD),   B' = U_r √(Σ_r / s'),   A' = √(Σ_r / s') V_rᵀ,   s' = alpha / r
so s' B' A' is the best rank-r approximation of s B A (Eckart–Young); the Frobenius error of each layer's
update is the root sum of squares of its dropped singular values. A layer whose rank is already ≤ r keeps
its factors and scale, so squeezing to r ≥ r_src reproduces the adapter exactly. Nothing trains; the
dense (out, in) update is never formed: rankwise.adapters.lora_squeeze.squeezed_factors factorises
s B A through thin QRs of B and Aᵀ (exact, svd_iters = 0) or the paper's randomized SVD (svd_iters > 0).

Input and output are adapters: `squeeze_adapter` works on a model in memory; `squeeze_adapter_folder`
reads an adapter folder (rankwise or PEFT format) and writes a rankwise adapter folder from the tensors
alone, without loading the base model (its fingerprint is copied, since the layers are the same).
Paper vs rankwise: the paper leaves the new scale open (PEFT's convert_to_lora bakes it in, alpha =
rank); rankwise keeps alpha and uses a rank-r LoRA's s' = alpha / r, as the in-training finalize does,
so further training (the paper's Cont-Squeeze) behaves like a LoRA trained at rank r. Either choice gives
the same outputs. The default SVD is exact, because through the QRs it costs only O((out + in) r_src²).
The in-training modes (In-Squeeze, annealing) are the adapter method rankwise.adapters.lora_squeeze.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..adapters import ADAPTERS, get_config
from ..adapters.api import method_layers, unmerge
from ..adapters.lora import Lora, LoraConfig
from ..adapters.lora_squeeze import squeezed_factors
from ..errors import AdapterFileError, ConfigError
from ..io import adapter_file
from ..io.adapter_file import read_adapter, write_adapter
from .base import CompressConfig, Compressor, register

SQUEEZABLE = ("lora", "rslora")  # plain s B A adapters; others (DoRA, PiSSA, ...) are not a bare product


@dataclass
class LoraSqueezeConfig(CompressConfig):
    rank: int = 8  # the target rank; layers already at or below it keep theirs
    svd_iters: int = 0  # 0: exact SVD of s B A; k > 0: randomized SVD with k power iterations (the paper's)

    invalid: ClassVar[tuple[dict, ...]] = ({"rank": 0}, {"svd_iters": -1})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ConfigError(f"lora-squeeze: rank must be a positive integer, got {self.rank!r}.")
        if not isinstance(self.svd_iters, int) or isinstance(self.svd_iters, bool) or self.svd_iters < 0:
            raise ConfigError(f"lora-squeeze: svd_iters must be an integer >= 0, got {self.svd_iters!r}.")


def settings(rank: int | LoraSqueezeConfig, svd_iters: int = 0) -> LoraSqueezeConfig:
    """The checked settings, from a rank (and svd_iters) or a whole config (the CLI's --rank, --set)."""
    return rank if isinstance(rank, LoraSqueezeConfig) else LoraSqueezeConfig(rank=rank, svd_iters=svd_iters)


def lora_config(config: Any, rank: int, alpha: float) -> LoraConfig:
    """A plain LoRA config with `config`'s other settings (targets, dropout, ...) at `rank` and `alpha`."""
    kept = {key: getattr(config, key) for key in LoraConfig.field_names()
            if hasattr(config, key) and key not in ("rank", "alpha", "rank_pattern", "alpha_pattern")}
    return LoraConfig.create("lora", **kept, rank=rank, alpha=alpha)  # per-layer values live in the plan


def squeeze_layer(A: torch.Tensor, B: torch.Tensor, scale: float, config: Any, rank: int,
                  svd_iters: int = 0) -> tuple[torch.Tensor, torch.Tensor, float, LoraConfig]:
    """(A', B', s', LoRA config) of one layer's plain LoRA, with s' B' A' ≈ s B A at rank ≤ `rank`."""
    old_rank = A.shape[0]
    if old_rank <= rank:  # already small enough: same factors and scale (an rsLoRA's alpha re-derived)
        kept = lora_config(config, old_rank, config.alpha)
        if Lora.scaling(kept) != scale:
            kept = lora_config(config, old_rank, scale * old_rank)
        return A, B, scale, kept
    squeezed = lora_config(config, rank, config.alpha)
    new_scale = Lora.scaling(squeezed)
    B_new, A_new = squeezed_factors(B, A, rank, scale, new_scale, svd_iters)
    return A_new.to(A.dtype).contiguous(), B_new.to(B.dtype).contiguous(), new_scale, squeezed


def refuse_method(method: str, where: str) -> None:
    if method not in SQUEEZABLE:
        raise ConfigError(f"{where} is a {method!r} adapter; lora-squeeze squeezes plain LoRA updates s·B·A "
                          f"({', '.join(SQUEEZABLE)}) only. Train or export a LoRA to squeeze.")


@torch.no_grad()
def squeeze_adapter(model: nn.Module, name: str = "default", rank: int | LoraSqueezeConfig = 8,
                    svd_iters: int = 0) -> nn.Module:
    """Replace adapter `name` of `model` (lora or rslora) by a plain LoRA of rank ≤ `rank`, in place.

    Each layer's s' B' A' is the best rank-`rank` approximation of its old s B A (exact where the old
    rank is ≤ `rank`). The adapter keeps its place, active state and requires_grad; a model with merged
    adapters is unmerged first. Returns the model.
    """
    wanted = settings(rank, svd_iters)
    rank, svd_iters = wanted.rank, wanted.svd_iters
    layers = method_layers(model, name)
    for adapter in layers.values():
        refuse_method(type(adapter).name, f"adapter {name!r}")
    source = get_config(model, name)
    top = lora_config(source, rank, source.alpha)
    built = {}
    for path, adapter in layers.items():
        A, B, scale, config = squeeze_layer(adapter.lora_A, adapter.lora_B, adapter.scale, adapter.config,
                                            rank, svd_iters)
        lora = Lora.from_factors(A, B, scale, config)
        lora.config, lora.plan_config = config, top  # the exact alpha, and the config the file records
        lora.train(adapter.training).requires_grad_(adapter.lora_A.requires_grad)
        built[path] = lora
    unmerge(model)
    for path, lora in built.items():
        model.get_submodule(path).adapters[name] = lora  # same key: its order among stacked adapters stays
    return model


def _factors(state: dict, path: str, rank: int, source: Path) -> tuple[torch.Tensor, torch.Tensor]:
    A, B = state.get(f"{path}.lora_A"), state.get(f"{path}.lora_B")
    if A is None or B is None or A.ndim != 2 or B.ndim != 2 or A.shape[0] != rank or B.shape[1] != rank:
        raise AdapterFileError(f"{source}: {path} lacks lora_A (rank {rank}, in) and lora_B (out, rank "
                               f"{rank}) of the saved rank; the file was edited. Re-save the adapter.")
    if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
        raise AdapterFileError(f"{source}: {path} holds NaN or infinite values (a diverged run?); squeeze "
                               "an earlier checkpoint.")
    return A, B


def squeeze_adapter_folder(source: str | os.PathLike, destination: str | os.PathLike,
                           rank: int | LoraSqueezeConfig, svd_iters: int = 0) -> Path:
    """Squeeze the lora/rslora adapter folder `source` to rank ≤ `rank` into a new rankwise adapter folder
    `destination`, from the saved tensors alone (no base model is loaded). Returns `destination`.

    The output loads with rankwise.io.load_adapter onto the same base model (and exports to PEFT from
    there). `rank` may be a LoraSqueezeConfig (rank and svd_iters). Bad input raises before anything is
    written; the folder is written atomically.
    """
    wanted = settings(rank, svd_iters)
    rank, svd_iters = wanted.rank, wanted.svd_iters
    source, destination = Path(source), Path(destination)
    if destination.resolve() == source.resolve():
        raise ConfigError(f"{destination} is the source adapter folder; write the squeezed adapter to "
                          "another folder, so the original stays.")
    saved = read_adapter(source)
    refuse_method(saved.method, str(source))
    adapter_file.refuse_foreign_files(destination)
    method_class, state = ADAPTERS.get(saved.method), dict(saved.state)
    plan = {}
    for path, layer_config in saved.plan.items():
        A, B = _factors(state, path, layer_config.rank, source)
        A, B, _, plan[path] = squeeze_layer(A, B, method_class.scaling(layer_config), layer_config, rank,
                                            svd_iters)
        state[f"{path}.lora_A"], state[f"{path}.lora_B"] = A, B  # other tensors (modules_to_save) stay
    top = lora_config(saved.config, rank, saved.config.alpha)
    # The layers are the source's, so is the base: its fingerprint is carried over.
    record = {"family": "adapter", "method": "lora", "name": saved.name, "config": top.to_dict(),
              "plan": adapter_file.plan_overrides(top, plan)}
    return write_adapter(destination, record, state, saved.base_model)


@register("lora-squeeze")
class LoraSqueeze(Compressor):
    """Listed with the compressors; it compresses an adapter folder, not a model's layers."""

    config_class = LoraSqueezeConfig
    paper = "LoRA-Squeeze: Simple and Effective Post-Tuning and In-Tuning Compression of LoRA Modules"
    url = "https://arxiv.org/abs/2602.10993"
    takes_adapter: ClassVar[bool] = True  # input and output are adapter folders: squeeze_adapter_folder

    @classmethod
    def build(cls, layer: nn.Linear, config: LoraSqueezeConfig, stats=None) -> nn.Module:
        raise ConfigError("lora-squeeze compresses a trained LoRA adapter, not a model's layers: run "
                          "`rankwise compress ADAPTER_DIR --method lora-squeeze --rank R --out DIR`, or "
                          "rankwise.compress.lora_squeeze.squeeze_adapter_folder / squeeze_adapter.")

    shape = build
