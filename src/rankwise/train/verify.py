"""Check that an adapter gives the same outputs however it is run: `rankwise verify` and verify_adapter.

On a fixed set of prompts (PROMPTS, each run alone, so no padding is involved) the next-token logits of
the adapter applied unmerged, the reference, are compared with:
    merged        the same model after rankwise.merge (each layer's W <- merged_weight(W))
    peft          the adapter exported in PEFT's format and loaded by PEFT on a fresh base model
    transformers  the model exported merged (io.export) and loaded by plain transformers
Each row is max |logits - reference| over every prompt, position and vocabulary entry, in float32; a
row passes when that is at most `tolerance` x max |reference logit| (default 1e-3: float32 rounding
gives ~3e-6 of the logit scale on SmolLM2, a wrong scaling or layout gives differences of order one).
A row that cannot run is skipped with its reason: a method that does not merge (merged, transformers),
PEFT not installed or without the method (peft). The result is returned, and for a rankwise-format
adapter written into its adapter.json under "verify" (the JSON is rewritten atomically; "verify" is not
part of settings_sha256, so the adapter still loads). PEFT-format folders are only read.
Causal language models only: the rows compare language-model logits.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..errors import ConfigError, NotMergeable
from ..io.adapter_file import META_FILE, load_adapter, rankwise_version, read_adapter
from ..io.atomic import write_json
from ..io.export import adapters_merged, export_model
from ..io.peft_format import EXPORTABLE
from ..io.readers import read_json
from ..models import load, require_causal_lm

PROMPTS = (
    "Convert 5 March 2021 to ISO format:",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "The three primary colours are red, yellow and",
)
ROWS = ("merged", "peft", "transformers")


@torch.no_grad()
def prompt_logits(model, token_ids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Float32 logits of `model` for each prompt's (1, length) token ids."""
    return [model(input_ids=ids).logits.float() for ids in token_ids]


def max_difference(logits: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    return max((a - b).abs().max().item() for a, b in zip(logits, reference))


def _peft_logits(load_base: Callable, adapter_model, method: str, token_ids, folder: Path):
    try:
        from peft import PeftModel
    except ImportError:
        return "peft is not installed (pip install peft)"
    if method not in EXPORTABLE:
        return f"PEFT has no exact equivalent of {method} (PEFT export covers {', '.join(EXPORTABLE)})"
    try:
        export_model(adapter_model, folder, "peft")
    except ConfigError as err:
        return f"PEFT export refused it: {err}"
    with warnings.catch_warnings():  # transformers' deprecation notices, triggered inside PEFT
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = PeftModel.from_pretrained(load_base(), folder).eval()
    return prompt_logits(peft_model, token_ids)


def _transformers_logits(adapter_model, tokenizer, token_ids, folder: Path):
    from transformers import AutoModelForCausalLM

    try:
        export_model(adapter_model, folder, "merged", tokenizer)
    except NotMergeable as err:
        return f"not mergeable: {err}"
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    return prompt_logits(plain.eval(), token_ids)


def _merged_logits(adapter_model, token_ids):
    try:
        with adapters_merged(adapter_model, "the merged row"):
            return prompt_logits(adapter_model, token_ids)
    except NotMergeable as err:
        return f"not mergeable: {err}"


def verify_adapter(model_name_or_path: str, adapter_dir: str | os.PathLike,
                   prompts: Sequence[str] | None = None, *, tolerance: float = 1e-3, record: bool = True,
                   allow_base_mismatch: bool = False) -> dict:
    """Compare the rows of the module docstring for the adapter in `adapter_dir` on `model_name_or_path`.

    Returns {"model", "adapter", "method", "prompts", "tokens", "max_abs_logit", "max_abs_diff": {row:
    float}, "skipped": {row: reason}, "tolerance", "failed": [rows over tolerance x max_abs_logit]}; with
    record=True a rankwise adapter's adapter.json also gets it under "verify" (and the result "recorded":
    the file's path). A missing or broken adapter folder fails before any model loads."""

    adapter_dir = Path(adapter_dir)
    saved = read_adapter(adapter_dir)
    prompts = list(PROMPTS if prompts is None else prompts)
    if not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ConfigError(f"tolerance must be a number >= 0, got {tolerance!r}.")
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ConfigError("verify needs at least one non-empty prompt.")
    require_causal_lm(model_name_or_path, "verify")
    model, tokenizer = load(model_name_or_path)
    if tokenizer is None:
        raise ConfigError(f"{model_name_or_path} has no tokenizer saved with it; verify tokenizes its "
                          "prompts.")
    load_adapter(model, adapter_dir, allow_base_mismatch=allow_base_mismatch)
    model.eval()
    token_ids = [tokenizer(p, return_tensors="pt").input_ids for p in prompts]
    reference = prompt_logits(model, token_ids)
    rows = {"merged": _merged_logits(model, token_ids)}
    with tempfile.TemporaryDirectory() as scratch:
        fresh_base = lambda: load(model_name_or_path, tokenizer=False)[0]  # noqa: E731
        rows["peft"] = _peft_logits(fresh_base, model, saved.method, token_ids, Path(scratch) / "peft")
        rows["transformers"] = _transformers_logits(model, tokenizer, token_ids, Path(scratch) / "merged")
    result = {
        "model": str(model_name_or_path), "adapter": str(adapter_dir), "method": saved.method,
        "prompts": len(prompts), "tokens": sum(ids.shape[1] for ids in token_ids),
        "max_abs_logit": max(r.abs().max().item() for r in reference),
        "max_abs_diff": {row: max_difference(value, reference) for row, value in rows.items()
                         if not isinstance(value, str)},
        "skipped": {row: value for row, value in rows.items() if isinstance(value, str)},
        "tolerance": tolerance,
    }
    limit = tolerance * result["max_abs_logit"]
    result["failed"] = [row for row, diff in result["max_abs_diff"].items() if not diff <= limit]
    if record and (adapter_dir / META_FILE).is_file():
        record_verification(adapter_dir / META_FILE, result)
        result["recorded"] = str(adapter_dir / META_FILE)
    return result


def record_verification(meta_path: Path, result: dict) -> None:
    """Rewrite adapter.json with result under "verify" (atomically; nothing else in it changes)."""
    meta = read_json(meta_path)
    meta["verify"] = {"rankwise_version": rankwise_version(),
                      **{key: value for key, value in result.items() if key != "adapter"}}
    write_json(meta_path, meta)
