"""compress(model, method, ...): replace the planned layers by their compressed form, and the family
entry through which rankwise.io saves and loads compressed models."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from .._registry import FAMILIES
from ..adapters import adapt, adapter_names
from ..adapters.lora import LoraConfig
from ..errors import ConfigError
from ..io.replaced_layers import ReplacedLayers
from .base import COMPRESSORS, CompressConfig
from .calibration import LayerStats, collect_stats

LAYERS = ReplacedLayers("compress", COMPRESSORS, "compression", "compresses")  # plans, records, loading


def compress(model: nn.Module, method: str = "svd", *, name: str = "default",
             config: CompressConfig | None = None, calibration: Iterable | None = None,
             stats: Mapping[str, LayerStats] | None = None, progress: bool = True,
             **fields: Any) -> nn.Module:
    """Compress the layers `method`'s config selects, in place; returns the model.

    `fields` are the method's config fields (e.g. rank=64 or ratio=0.5, targets, rank_pattern).
    `calibration` is an iterable of batches (dicts of model inputs, or tensors) for the methods that
    read activations (EoRA, ASVD, AFM, ...); or pass `stats`, collect_stats' output for these layers, to
    reuse one pass over the data across several settings. A method with a compensation also installs
    it as a LoRA adapter named after the method (rankwise.adapters.adapter_names). Every layer is built
    before any is replaced, so a bad setting leaves the model as it was.
    """
    cls, config, plan = LAYERS.plan(model, method, name, config, fields)
    plan = cls.plan_ranks(model, config, plan)
    if not plan:  # nothing worth compressing (e.g. WeLore at tau=0): no record, which could not be saved
        warnings.warn(f"{method} kept every targeted layer as it is; the model is unchanged.", stacklevel=2)
        return model
    if stats is None:
        stats = _calibrate(model, cls, plan, calibration, progress)
    elif missing := [path for path in plan if path not in stats]:
        raise ConfigError(f"the given stats lack {len(missing)} planned layer(s), e.g. {missing[0]}.")
    built, corrections = {}, {}
    for path, layer_config in tqdm(plan.items(), desc=f"compressing ({method})", leave=False,
                                   disable=not progress):
        layer = model.get_submodule(path)
        try:
            built[path] = cls.build(layer, layer_config, stats.get(path))
            correction = cls.compensation(layer, built[path], layer_config, stats.get(path))
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        if correction is not None:
            corrections[path] = correction
    if corrections and method in adapter_names(model):
        raise ConfigError(f"the model already has an adapter named {method!r}, where {method}'s "
                          "compensation goes; unload it first.")
    originals = {path: model.get_submodule(path) for path in built}
    LAYERS.install(model, name, method, config, plan, built)
    try:
        cls.after_install(model, config, originals, calibration)
    except BaseException:  # a failed whole-model step (or ^C) leaves the model as it was
        LAYERS.uninstall(model, name, originals)
        raise
    if corrections:
        _install_compensation(model, method, corrections)
    return model


def _calibrate(model, cls, plan, calibration, progress) -> dict:
    if cls.calibration is None:
        return {}
    if calibration is None:
        raise ConfigError(f"{cls.name} reads activations: pass calibration= (batches of model inputs); "
                          "the CLI uses --calib FILE or the bundled corpus.")
    return collect_stats(model, plan, calibration, inputs=cls.calibration == "inputs",
                         outputs=cls.calibration == "outputs", progress=progress)


def _install_compensation(model, method: str, corrections: dict) -> None:
    """The corrections B A (one rank for all) as a LoRA of scale 1 (alpha = rank) on the compressed layers."""
    rank = next(iter(corrections.values()))[1].shape[0]
    config = LoraConfig.create("lora", rank=rank, alpha=rank, targets=list(corrections))
    state = {f"{path}.{key}": value.contiguous() for path, (B, A) in corrections.items()
             for key, value in (("lora_A", A), ("lora_B", B))}
    adapt(model, "lora", name=method, config=config, state=state, freeze_base=False,
          source=f"{method}'s compensation")


def installed(model: nn.Module) -> list[str]:
    return LAYERS.installed(model)


FAMILIES.register("compress")(LAYERS.family())
