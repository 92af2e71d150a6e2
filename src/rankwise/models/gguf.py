"""GGUF -> a normal Hugging Face folder, converted once and cached.

transformers dequantizes a GGUF on every load (~30 s for SmolLM2-135M). rankwise does that once, saves
the float32 weights as safetensors next to the tokenizer, and loads that folder afterwards (seconds).
The folder is written under a temporary name and renamed into place, so a reader never sees half a
model and two processes converting at once both end with the same complete folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..errors import RankwiseError

_CHECK_TEXT = "Convert 5 March 2021 to ISO format: 2021-03-05"


def cache_root() -> Path:
    """$RANKWISE_CACHE, else ~/.cache/rankwise."""
    return Path(os.environ.get("RANKWISE_CACHE") or Path.home() / ".cache" / "rankwise")


def _fingerprint(gguf: Path) -> str:
    """Content hash, so a changed GGUF (a package upgrade) gets a fresh conversion, not a stale one."""
    stat = gguf.stat()
    return _hash_file(str(gguf.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    """sha256 prefix of a file; size and mtime are in the key so an edited file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def cached_folder(gguf: Path, kind: str = "model") -> Path:
    """Where the conversion of `gguf` lives (it may not exist yet)."""
    return cache_root() / "gguf" / f"{gguf.stem}-{_fingerprint(gguf)}" / kind


def load_gguf_direct(gguf: Path):
    """(model, tokenizer) dequantized straight from the GGUF by transformers: slow, the reference."""
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    return model.eval(), load_gguf_tokenizer_direct(gguf)


def load_gguf_tokenizer_direct(gguf: Path):
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


def _dequantized(model):
    """Forget the GGUF origin: the weights are already float32, and save_pretrained refuses a
    'quantized' model; a saved quantization_config would also make the reload go through GGUF again."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def _publish(dest: Path, write) -> None:
    """Run write(tmp_dir), then rename tmp_dir to dest; if another process got there first, keep theirs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, dest)  # atomic on one filesystem; fails if dest already exists and is complete
        except OSError:
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_converted(gguf: Path, check_text: str = _CHECK_TEXT) -> Path:
    """The cached HF folder for `gguf`, converting it first if needed.

    Before publishing, the saved folder is reloaded and its logits on `check_text` compared with the
    direct GGUF load: a conversion that changed the model is an error, never a silently wrong cache.
    """
    dest = cached_folder(gguf)
    if dest.is_dir():
        return dest
    model, tokenizer = load_gguf_direct(gguf)
    model = _dequantized(model)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"gguf": str(gguf), "name": gguf.name}
        (tmp / "rankwise_source.json").write_text(json.dumps(source, indent=1))
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, local_files_only=True)
        ids = tokenizer(check_text, return_tensors="pt").input_ids
        with torch.no_grad():
            if not torch.equal(model(ids).logits, reloaded(ids).logits):
                raise RankwiseError(f"converting {gguf} changed the model's outputs; nothing was cached.")

    _publish(dest, write)
    return dest


def ensure_tokenizer(gguf: Path) -> Path:
    """A folder holding only the GGUF's tokenizer (5 s to read from the GGUF, milliseconds afterwards).

    The full model conversion's tokenizer is reused when that already exists.
    """
    model_folder = cached_folder(gguf)
    if model_folder.is_dir():
        return model_folder
    dest = cached_folder(gguf, kind="tokenizer")
    if not dest.is_dir():
        tokenizer = load_gguf_tokenizer_direct(gguf)
        _publish(dest, tokenizer.save_pretrained)
    return dest
