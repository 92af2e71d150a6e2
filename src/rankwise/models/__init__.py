"""Models by name: the embedded ones (shipped in pip packages, no hub downloads), or any local folder.

    model, tokenizer = rankwise.models.load("smollm2-135m")
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as transformers_logging

from ..errors import ConfigError
from ..io.model_folder import is_model_folder, load_model
from .embedded import EMBEDDED, ModelPackageMissing, package_file
from .gguf import cache_root, ensure_converted, ensure_tokenizer
from .tiny import tiny_llama

__all__ = ["EMBEDDED", "ModelPackageMissing", "cache_root", "load", "require_causal_lm"]

# The embedded models that are encoders (sentence embeddings), not causal language models.
_ENCODERS = {"minilm-l6"}


def load(name_or_path: str, dtype: torch.dtype = torch.float32, *, seed: int = 0, tokenizer: bool = True):
    """(model, tokenizer) in eval mode, for an embedded name, a local HF folder or a local .gguf file,
    or a folder rankwise.io.save_model wrote (a compressed or adapted model; tokenizer None if none was
    saved with it).

    Embedded names are in EMBEDDED. A .gguf (SmolLM2's included) is dequantized once and cached as
    safetensors under $RANKWISE_CACHE (default ~/.cache/rankwise). Nothing is ever downloaded.
    `seed` only matters for "tiny-llama", whose weights are random. tokenizer=False skips a local
    folder's tokenizer (None is returned), for weights-only uses such as reading a fine-tune to merge.
    """
    name = str(name_or_path)
    if name == "tiny-llama":
        tokenizer = _tokenizer_of(ensure_tokenizer(package_file("smollm2-135m")))
        return tiny_llama(tokenizer, seed=seed).to(dtype), tokenizer
    if name == "smollm2-135m":
        return _load_folder(ensure_converted(package_file(name)), dtype)
    if name == "minilm-l6":
        return _load_folder(package_file(name), dtype)
    path = _local_path(name)
    if path is None:
        pass  # the OS refuses the name itself: unknown model, below
    elif path.is_dir() and is_model_folder(path):  # a model saved with rankwise.io.save_model
        model = load_model(path, lambda folder: _load_folder(folder, dtype, tokenizer=False, quiet=True)[0])
        has_tokenizer = (path / "tokenizer_config.json").is_file()
        return model.eval(), _tokenizer_of(path) if has_tokenizer else None
    elif path.is_file() and path.suffix == ".gguf":
        return _load_folder(ensure_converted(path.resolve()), dtype)
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{path} has no config.json; point at a Hugging Face model folder (save_pretrained)."
            )
        return _load_folder(path, dtype, tokenizer=tokenizer)
    known = ", ".join(sorted(EMBEDDED))
    raise ConfigError(
        f"unknown model {name!r}: it is neither an embedded model ({known}) nor an existing local "
        "Hugging Face folder or .gguf file. rankwise never downloads from a model hub; save the model "
        "locally first (model.save_pretrained(folder)) and pass that folder."
    )


def _local_path(name: str) -> Path | None:
    """Path(name), or None when the OS refuses the name itself (too long, an unknown ~user)."""
    try:
        path = Path(name).expanduser()
        path.exists()
    except (OSError, RuntimeError, ValueError):
        return None
    return path


def require_causal_lm(name_or_path: str, what: str) -> None:
    """Refuse, before anything loads, a model that cannot generate: `what` needs a causal LM."""
    name = str(name_or_path)
    path = _local_path(name)
    if name in _ENCODERS:
        encoder = True
    elif name in EMBEDDED or name == "tiny-llama" or path is None or not (path / "config.json").is_file():
        return  # the embedded causal LMs and .gguf files; a missing folder gets its own error from load
    else:
        encoder = not is_model_folder(path) and not _is_causal_lm(path)
    if encoder:
        raise ConfigError(
            f"{name} is an encoder (no language-model head), and {what} generates answers with a causal "
            "language model. Use smollm2-135m, tiny-llama or a local *ForCausalLM folder; minilm-l6 "
            "works with `rankwise analyze` (weights, --residual).")


def _tokenizer_of(folder: Path):
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _is_causal_lm(folder: Path) -> bool:
    """Decided from config.json's architectures: AutoModelForCausalLM would give an encoder such as
    BERT a freshly initialised LM head, which is worse than giving it no head at all."""
    architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)


def _load_folder(folder: Path, dtype: torch.dtype, tokenizer: bool = True, quiet: bool = False):
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
        raise ConfigError(
            f"{folder} has no .safetensors weights"
            f"{f' (it holds {pickled[0]}, a pickle file)' if pickled else ''}; "
            "rankwise never unpickles. Convert it once where you trust the file: "
            "AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True).")
    auto = AutoModelForCausalLM if _is_causal_lm(folder) else AutoModel
    verbosity = transformers_logging.get_verbosity()
    if quiet:  # a model folder leaves out the layers a family replaced, by design: no "MISSING" report
        transformers_logging.set_verbosity_error()
    try:
        model = auto.from_pretrained(folder, dtype=dtype, local_files_only=True, use_safetensors=True)
    finally:
        transformers_logging.set_verbosity(verbosity)
    return model.eval(), _tokenizer_of(folder) if tokenizer else None
