"""Intruder dimensions (Shuttleworth, Andreas, Torralba, Sharma: "LoRA vs Full Fine-tuning: An Illusion
of Equivalence") and `compare`, which measures them layer by layer between a base and a fine-tune.

For W₀ (base) and W_ft (tuned), both out × in, with left singular vectors U₀, U_ft (fp32, thin SVD):
    sim_j = max_i |⟨u_j^ft, u_i^0⟩|    for the top-k fine-tuned directions j = 1 … k
and direction j is an *intruder* when sim_j < ε (paper defaults k = 10, ε = 0.5). LoRA, especially at
low rank, creates them; full fine-tuning mostly does not.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..surgery.targets import Targets
from .weights import _weights, layer_type

__all__ = ["intruder_dimensions", "compare", "load_tuned"]


def intruder_dimensions(W_base: torch.Tensor, W_tuned: torch.Tensor, k: int = 10,
                        threshold: float = 0.5) -> dict:
    """Count the intruders among W_tuned's top-k left singular vectors, and the spectrum shift.

    Returns {"count", "intruders" (indices j), "similarities" (sim_j, j < k), "k", "threshold",
    "spectrum_shift" (‖σ_ft − σ₀‖ / ‖σ₀‖), "top_sv_shift" ((σ_ft,j − σ₀,j)/σ₀,j for j < k),
    "singular_values_base", "singular_values_tuned"}.
    """
    if W_base.shape != W_tuned.shape:
        raise ConfigError(f"cannot compare weights of shapes {tuple(W_base.shape)} and "
                          f"{tuple(W_tuned.shape)}.")
    U0, s0, _ = torch.linalg.svd(W_base.detach().float().cpu(), full_matrices=False)
    U1, s1, _ = torch.linalg.svd(W_tuned.detach().float().cpu(), full_matrices=False)
    k = min(k, U1.shape[1])
    # |U_ftᵀ U₀| is k × r: row j holds direction j's cosines with every base direction (all unit norm).
    sims = (U1[:, :k].T @ U0).abs().max(dim=1).values.double().tolist()
    s0, s1 = s0.double(), s1.double()
    base_norm = float(torch.linalg.vector_norm(s0))
    return {
        "count": sum(sim < threshold for sim in sims),
        "intruders": [j for j, sim in enumerate(sims) if sim < threshold],
        "similarities": sims, "k": k, "threshold": threshold,
        "spectrum_shift": float(torch.linalg.vector_norm(s1 - s0)) / base_norm if base_norm > 0 else 0.0,
        "top_sv_shift": ((s1[:k] - s0[:k]) / s0[:k].clamp_min(1e-30)).tolist(),
        "singular_values_base": s0.tolist(), "singular_values_tuned": s1.tolist(),
    }


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter.json").is_file() or (path / "adapter_config.json").is_file()


def load_tuned(base_model: nn.Module, tuned: str | Path) -> nn.Module:
    """The fine-tuned model named by `tuned`: an adapter folder (rankwise or PEFT) is loaded onto a copy
    of `base_model` and merged into its weights; any other folder is loaded as a Hugging Face model."""
    from ..adapters import unload
    from ..io import load_adapter
    from ..models import load

    path = Path(tuned).expanduser()
    if path.is_dir() and _is_adapter_dir(path):
        model = load_adapter(copy.deepcopy(base_model), path)
        return unload(model, merge=True)  # W_ft = W₀ + ΔW, as the paper's merge_and_unload
    return load(str(tuned))[0]


def compare(base_model: nn.Module, tuned: nn.Module | str | Path, targets: Targets = "all-linear",
            k: int = 10, threshold: float = 0.5, progress: bool = True) -> dict:
    """Intruder dimensions and spectrum shift per targeted layer, and aggregated by layer type.

    `tuned` is a model with the same module names, an adapter folder, or a local HF model folder.
    Returns {"layers": {name: intruder_dimensions(...) + "type"}, "by_type": {type: {"layers",
    "intruders", "mean_intruders", "mean_spectrum_shift", "mean_min_similarity"}}, "total_intruders",
    "k", "threshold"}.
    """
    tuned_model = tuned if isinstance(tuned, nn.Module) else load_tuned(base_model, tuned)
    base_w, tuned_w = _weights(base_model, targets), _weights(tuned_model, targets)
    missing = sorted(set(base_w) - set(tuned_w))
    if missing:
        raise ConfigError(f"the fine-tuned model lacks {len(missing)} layers of the base "
                          f"(first: {missing[0]}); compare a fine-tune of this very base model.")
    layers = {}
    for name in tqdm(base_w, desc="compare", unit="layer", disable=not progress):
        layers[name] = ({"type": layer_type(name)}
                        | intruder_dimensions(base_w[name], tuned_w[name], k, threshold))
    by_type = {}
    for t in sorted({layer["type"] for layer in layers.values()}):
        group = [layer for layer in layers.values() if layer["type"] == t]
        by_type[t] = {
            "layers": len(group), "intruders": sum(l["count"] for l in group),
            "mean_intruders": float(np.mean([l["count"] for l in group])),
            "mean_spectrum_shift": float(np.mean([l["spectrum_shift"] for l in group])),
            "mean_min_similarity": float(np.mean([min(l["similarities"]) for l in group])),
        }
    return {"layers": layers, "by_type": by_type, "k": k, "threshold": threshold,
            "total_intruders": sum(l["count"] for l in layers.values())}
