"""Convert an adapter of any mergeable method into a plain LoRA: each layer's full update, cut by SVD.

For each layer the adapter sits on, with W its base weight (unmerged, in float32) seen as the (out, in)
matrix the layer applies (rankwise.adapters.layer_kinds: embeddings and convs too, for LoRA and DoRA):
    ΔW = merged_weight(W) − W = U S Vᵀ,     ΔW_k = U_k S_k V_kᵀ
    B = U_k √S_k (out, k),  A = √S_k V_kᵀ (k, in),  alpha = rank = k   (LoRA's scale alpha / rank = 1)
so the LoRA's update s·B A is exactly ΔW_k, the best rank-k approximation of the update in Frobenius norm
(Eckart–Young), with √S split evenly so that further training starts from balanced factors. k is `rank` for
every layer (at most min(out, in), where the LoRA is exact), or per layer the smallest k keeping a share
`energy` of Σσ²; layers whose k differs from the most common one get rank_pattern / alpha_pattern entries
keyed by their escaped path (PEFT's rule). Each layer's relative error ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F comes from
the same spectrum (linalg.svd.cut_svd); the overall one is ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F over all layers together.

Choices and limits:
- merged_weight, not delta_weight: methods that transform W (DoRA's row norms, TLoRA's T W) keep only a
  part of their update in delta_weight. ΔW is taken against the base weight alone: an adapter stacked
  on others is converted as if applied by itself, which is what its saved file means.
- Methods whose update is not a fixed weight delta (`mergeable` False: input-dependent gates, whole-block
  adapters) are refused with NotMergeable. On a compressed base (quantized, factorized) W is its dense
  reconstruction Ŵ, which the LoRA then sits on as the adapter did; the model is unmerged first.
- Biases: no rankwise method changes a bias (merging writes the weight only, adapters.layer), nor does the
  LoRA, so nothing is lost there; a method that did would have to be refused here.
- modules_to_save copies are carried over unchanged (the LoRA keeps them as copies: exact).
- One full SVD per layer, in float32 on the layer's device.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AdapterFileError, ConfigError, NotMergeable
from ..io import save_adapter, write_json
from ..io.adapter_file import ADAPTER_DIR_FILES
from ..io.atomic import atomic_directory
from ..linalg.svd import cut_svd
from .api import adapt, adapted_layers, layers_of, layout, method_layers, unload
from .base import ADAPTERS
from .layer_kinds import as_matrix, describe
from .lora import LoraConfig
from .module_copy import ModuleCopy

REPORT_FILE = "convert_report.json"


def check_choice(rank: Any, energy: Any) -> None:
    """Exactly one of rank (a positive integer) and energy (a share in (0, 1])."""
    if (rank is None) == (energy is None):
        raise ConfigError("give a rank (the same for every layer) or an energy (per-layer ranks keeping that "
                          "share of each update's squared norm, e.g. 0.99), not both or neither.")
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
        raise ConfigError(f"rank must be a positive integer, got {rank!r}.")
    if energy is not None and (isinstance(energy, bool) or not isinstance(energy, (int, float))
                               or not 0 < energy <= 1):
        raise ConfigError(f"energy must be a share in (0, 1], got {energy!r}.")


def check_convertible(method: str) -> None:
    """Refuse, in one line, a method whose update is not a fixed weight delta."""
    if not ADAPTERS.get(method).mergeable:
        raise NotMergeable(f"{method}'s update is not a fixed weight delta (it depends on the input or acts "
                           "on whole blocks), so it has no LoRA equivalent to convert to.")


def layer_update(layer: nn.Module, adapter: nn.Module, path: str) -> torch.Tensor:
    """ΔW = merged_weight(W) − W as the (out, in) matrix the layer applies, in float32 (or wider), with W
    the weight of the layer's (unmerged) base."""
    weight = getattr(layer.base, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise NotMergeable(f"{path}: its base has no weight to form the adapter's update against.")
    W = weight.detach().to(torch.promote_types(weight.dtype, torch.float32))
    return as_matrix(describe(layer.base), adapter.merged_weight(W).detach().to(W.dtype) - W)


@torch.no_grad()
def convert_to_lora(model: nn.Module, name: str = "default", *, rank: int | None = None,
                    energy: float | None = None, into: str | None = None) -> dict[str, Any]:
    """Replace adapter `name` by a plain LoRA of its update (module docstring); returns the report.

    The LoRA is attached as adapter `into` (default: `name`, which replaces the original; another name
    keeps the original, inactive) and made the active one. The report holds the method, the choice
    (rank or energy), each layer's {"shape", "rank", "relative_error", "energy_kept"}, the overall and
    largest relative errors, the parameter counts {"source", "lora"} and the modules_to_save carried over.
    """
    check_choice(rank, energy)
    method, config, _, _ = layout(model, name)
    check_convertible(method)
    own = method_layers(model, name)
    if not own:
        raise ConfigError(f"adapter {name!r} holds only modules_to_save copies: no update to convert.")
    wrappers = adapted_layers(model)
    for layer in wrappers.values():
        layer.unmerge()  # W is then the base itself, for compressed bases too (adapt would unmerge anyway)
    factors, rows, lost, total = {}, {}, 0.0, 0.0
    for path, adapter in own.items():
        delta = layer_update(wrappers[path], adapter, path)
        kept, error = cut_svd(delta, rank, energy)
        factors[path] = kept.split()
        norm_sq = float(delta.double().square().sum())
        lost, total = lost + error ** 2 * norm_sq, total + norm_sq
        rows[path] = {"shape": list(delta.shape), "rank": kept.rank, "relative_error": error,
                      "energy_kept": 1.0 - error ** 2}
    copies = {path: {key: value.detach().clone() for key, value in copy.state_dict().items()}
              for path, copy in layers_of(model, name).items() if isinstance(copy, ModuleCopy)}
    lora_config, plan, state = lora_layout(config, factors, copies)
    into = name if into is None else into
    if into == name:
        unload(model, name)
    adapt(model, "lora", name=into, config=lora_config, plan=plan, state=state,
          source=f"the {method} adapter's LoRA conversion")
    errors = [row["relative_error"] for row in rows.values()]
    return {"method": method, "to": "lora", "rank": rank, "energy": energy, "adapter": into,
            "layers": rows, "relative_error": math.sqrt(lost / total) if total > 0 else 0.0,
            "max_relative_error": max(errors),
            "parameters": {"source": sum(p.numel() for a in own.values() for p in a.parameters()),
                           "lora": sum(B.numel() + A.numel() for B, A in factors.values())},
            "modules_to_save": sorted(copies)}


def lora_layout(config: Any, factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                copies: dict[str, dict[str, torch.Tensor]]) -> tuple[LoraConfig, dict[str, LoraConfig], dict]:
    """(the LoRA's config, its per-layer plan, its state) for `factors` {path: (B, A)} at scale 1."""
    ranks = {path: A.shape[0] for path, (_, A) in factors.items()}
    usual = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {re.escape(path): r for path, r in ranks.items() if r != usual}
    lora_config = LoraConfig(targets=list(factors), rank=usual, alpha=float(usual),
                             dropout=getattr(config, "dropout", 0.0), rank_pattern=pattern,
                             alpha_pattern={key: float(r) for key, r in pattern.items()},
                             modules_to_save=list(config.modules_to_save))
    plan = {path: lora_config.for_layer(path) for path in factors}
    state = {f"{path}.{key}": value for path, (B, A) in factors.items()
             for key, value in (("lora_A", A.contiguous()), ("lora_B", B.contiguous()))}
    state.update({f"{path}.{key}": value
                  for path, tensors in copies.items() for key, value in tensors.items()})
    return lora_config, plan, state


def check_output(directory: str | os.PathLike, source: str | os.PathLike | None = None) -> Path:
    """Refuse, before any work, an output folder that holds other files or is the input adapter's."""
    directory = Path(directory)
    if source is not None and directory.resolve() == Path(source).resolve():
        raise AdapterFileError(f"{directory} is the input adapter's folder; give the LoRA its own folder.")
    if directory.exists() and not directory.is_dir():
        raise AdapterFileError(f"{directory} is a file; give an output folder path.")
    allowed = ADAPTER_DIR_FILES | {REPORT_FILE, ".DS_Store"}
    present = directory.iterdir() if directory.is_dir() else ()
    foreign = sorted(p.name for p in present if p.name not in allowed)
    if foreign:
        raise AdapterFileError(f"{directory} holds other files ({', '.join(foreign[:5])}); the save replaces "
                               "the whole folder, so give an empty or new one.")
    return directory


def save_converted(model: nn.Module, directory: str | os.PathLike, report: dict[str, Any],
                   formats: tuple[str, ...] = ("rankwise",)) -> Path:
    """Save the converted LoRA (report["adapter"]) in each format, side by side, with convert_report.json;
    the folder is replaced as a whole (a failed save leaves the old one)."""
    directory = check_output(directory)
    with atomic_directory(directory) as tmp:
        for form in dict.fromkeys(formats):
            part = save_adapter(model, tmp / f"part-{form}", report["adapter"], format=form)
            for file in part.iterdir():
                os.replace(file, tmp / file.name)
            part.rmdir()
        write_json(tmp / REPORT_FILE, report)
    return directory

