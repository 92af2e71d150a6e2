"""A model's config and its meta-device twin, for the estimates before launch (rankwise.train.estimate,
rankwise.compress.estimate): no weights are read.

The config, by name (as rankwise.models.load resolves it):
    smollm2-135m, a .gguf   config.json of the converted folder when rankwise has cached it (read in
                            milliseconds), else the GGUF's metadata through transformers (a few seconds:
                            it parses the header, tokenizer tables included, never the tensors)
    tiny-llama              rankwise.models.tiny's shape with SmolLM2's vocabulary (read as above)
    a folder                its config.json (a rankwise model folder: its base's, so the layers a family
                            replaced are estimated as the originals; a note says so)
A method that cannot be applied to meta tensors (one that needs the weights' values to plan, such as
SaRA's) raises EstimateUnavailable with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from ..errors import ConfigError, RankwiseError


class EstimateUnavailable(RankwiseError):
    """The estimate cannot be made without the weights; the message says why."""


@functools.lru_cache(maxsize=8)
def _gguf_config(gguf: Path) -> PretrainedConfig:
    from .gguf import cached_folder

    converted = cached_folder(gguf)
    if (converted / "config.json").is_file():
        return AutoConfig.from_pretrained(converted, local_files_only=True)
    return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


def read_config(name_or_path: str) -> tuple[PretrainedConfig, list[str]]:
    """(the model's transformers config, notes on how it was read) without reading any weights."""
    from ..io.model_folder import is_model_folder
    from .embedded import package_file
    from .tiny import tiny_llama_config

    name = str(name_or_path)
    if name == "tiny-llama":
        smollm2 = _gguf_config(package_file("smollm2-135m"))
        return tiny_llama_config(smollm2.vocab_size), []
    if name in ("smollm2-135m", "minilm-l6"):
        path = package_file(name)
    else:
        path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _gguf_config(path.resolve()), []
    if path.is_dir() and (path / "config.json").is_file():
        notes = ["a rankwise model folder: estimated as its base model, before its families' changes"] \
            if is_model_folder(path) else []
        return AutoConfig.from_pretrained(path, local_files_only=True), notes
    raise ConfigError(f"cannot read a model config from {name!r}: give an embedded model name, a .gguf "
                      "file or a Hugging Face folder with a config.json.")


@contextlib.contextmanager
def unless_values_needed(what: str):
    """An operation that needs real values on a meta tensor becomes EstimateUnavailable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. inits warning about meta tensors: nothing is computed
        try:
            yield
        except (NotImplementedError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EstimateUnavailable(f"{what} needs the weights' values ({first[:160]}); no estimate "
                                      "without loading them.") from None


def meta_causal_lm(config: PretrainedConfig) -> torch.nn.Module:
    """The causal LM of `config` with float32 meta tensors: shapes and dtypes, no storage. Only the
    construction runs under torch.device("meta"): a method applied later makes its own tensors on the
    model's device, and a process-wide cache (RandLoRA's shared bases) never receives a meta tensor."""
    with unless_values_needed("building the model"), torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)
