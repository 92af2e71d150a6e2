"""Options and checks shared by the subcommands that load a model (eval, generate), and their routing of
rows to named adapters (mixed batches)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import AdapterFileError, ConfigError

BASE = "__base__"  # rankwise.adapters.mixed.BASE, not imported here: the CLI loads torch only when it runs


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


def add_adapters_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--named-adapter", action="append", metavar="NAME=DIR", dest="adapters",
                        help="an adapter folder loaded under NAME; repeat it to mix several in a batch")


def named_adapters(args: argparse.Namespace) -> dict[str, str]:
    """{name: folder} of --named-adapter, checked before the model loads."""
    if args.adapters and args.adapter:
        raise ConfigError("give --adapter (one adapter) or --named-adapter (several, routed), not both.")
    folders: dict[str, str] = {}
    for spec in args.adapters or []:
        name, _, folder = spec.partition("=")
        if not name or not folder or set(name) & {".", ","} or name == BASE or name in folders:
            raise ConfigError(f"--named-adapter {spec!r}: write NAME=DIR, each NAME new, without '.' or ',', "
                              f"not {BASE}.")
        if not Path(folder).is_dir():
            raise AdapterFileError(f"--named-adapter {spec}: no such folder; give the one with adapter.json.")
        folders[name] = folder
    return folders


def load_with_adapters(args: argparse.Namespace, folders: dict[str, str]):
    """(model, tokenizer) for --model with --adapter, or every --named-adapter folder under its name."""
    from ..io import load_adapter

    model, tokenizer = load_model(args)
    for name, folder in folders.items():
        load_adapter(model, folder, name, allow_base_mismatch=args.allow_base_mismatch)
    return model, tokenizer


def routed_answers(model, tokenizer, prompts: list[str], routes: list[str] | None, max_new_tokens: int,
                   batch_size: int, progress: bool) -> list[str]:
    """Greedy answers; with `routes`, each batch is one mixed batch: routes[i] answers prompts[i]."""
    from tqdm.auto import tqdm

    from ..adapters import mixed_batch, needs_whole_sequence
    from ..train import evaluate

    if routes is None:
        return evaluate.generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                         batch_size=batch_size, progress=progress)
    if needs_whole_sequence(model):
        batch_size = 1  # generate_answers takes such a model one prompt at a time: one route per chunk
    answers: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generating", unit="batch",
                      disable=not progress):
        chunk = slice(start, start + batch_size)
        with mixed_batch(model, routes[chunk]):
            answers += evaluate.generate_answers(model, tokenizer, prompts[chunk], progress=False,
                                                 max_new_tokens=max_new_tokens, batch_size=batch_size)
    return answers
