"""`rankwise generate`: greedy text from a model, with an optional adapter, for one prompt or several."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from .common import (
    BASE,
    add_adapters_option,
    add_model_options,
    check_adapter_path,
    load_with_adapters,
    named_adapters,
    routed_answers,
)


def add_parser(sub) -> None:
    parser = sub.add_parser("generate", help="generate an answer to a prompt (model + optional adapter)",
                            description=__doc__.split(":", 1)[1].strip() +
                            " The prompt is wrapped in the tokenizer's chat template, as in training."
                            " With --named-adapter, the prompts run as one mixed batch, each through its"
                            " --route adapter.", allow_abbrev=False)
    add_model_options(parser)
    add_adapters_option(parser)
    parser.add_argument("prompts", nargs="*", metavar="prompt",
                        help="the prompt text(s); '-' or nothing reads one prompt from stdin")
    parser.add_argument("--route", metavar="NAME,...",
                        help=f"with --named-adapter: the adapter answering each prompt, comma-separated, in "
                             f"order ({BASE} for the base model); one name routes every prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most [64]")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ..models import require_causal_lm

    prompts = [sys.stdin.read()] if args.prompts in ([], ["-"]) else args.prompts
    if not all(p.strip() for p in prompts):
        raise ConfigError("a prompt is empty; pass the prompts as arguments or one on stdin.")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    check_adapter_path(args.adapter)
    folders = named_adapters(args)
    routes = args.route.split(",") if args.route else None
    if bool(folders) != bool(routes):
        raise ConfigError("--named-adapter and --route go together: load adapters, and name one per prompt.")
    if routes:
        routes = routes * len(prompts) if len(routes) == 1 else routes
        if len(routes) != len(prompts):
            raise ConfigError(f"--route names {len(routes)} adapters for {len(prompts)} prompts; give one "
                              "per prompt, or one for all.")
        unknown = sorted(set(routes) - set(folders) - {BASE})
        if unknown:
            raise ConfigError(f"--route names {unknown}, not among the named adapters {list(folders)} "
                              f"(or {BASE}).")
    require_causal_lm(args.model, "generate")
    model, tokenizer = load_with_adapters(args, folders)
    texts = routed_answers(model, tokenizer, prompts, routes, max_new_tokens=args.max_new_tokens,
                           batch_size=len(prompts), progress=False)
    print("\n\n".join(text.strip() for text in texts))  # several prompts: answers apart by a blank line
    return 0
