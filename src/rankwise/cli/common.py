"""Options and checks shared by the subcommands that load a model (eval, generate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import AdapterFileError


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="smollm2-135m, minilm-l6, tiny-llama, or a local HF folder")
    parser.add_argument("--adapter", metavar="DIR",
                        help="an adapter folder (rankwise or PEFT format) to apply")
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="load the adapter even if it was saved for another base model")


def check_adapter_path(path: str | None) -> None:
    """Fail before the model loads (which can take a while) if the adapter folder is not there."""
    if path is not None and not Path(path).is_dir():
        raise AdapterFileError(f"--adapter {path}: no such folder; point at the folder holding adapter.json.")


def load_model(args: argparse.Namespace):
    """(model, tokenizer) for --model, with --adapter loaded and active."""
    from ..io import load_adapter
    from ..models import load

    model, tokenizer = load(args.model)
    if args.adapter:
        load_adapter(model, args.adapter, allow_base_mismatch=args.allow_base_mismatch)
    return model.eval(), tokenizer
