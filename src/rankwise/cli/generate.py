"""`rankwise generate`: greedy text from a model, with an optional adapter, for one prompt."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from .common import add_model_options, check_adapter_path, load_model


def add_parser(sub) -> None:
    parser = sub.add_parser("generate", help="generate an answer to a prompt (model + optional adapter)",
                            description=__doc__.split(":", 1)[1].strip() +
                            " The prompt is wrapped in the tokenizer's chat template, as in training.",
                            allow_abbrev=False)
    add_model_options(parser)
    parser.add_argument("prompt", nargs="?", help="the prompt text; '-' or nothing reads it from stdin")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most [64]")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ..models import require_causal_lm
    from ..train.evaluate import generate_answers

    prompt = sys.stdin.read() if args.prompt in (None, "-") else args.prompt
    if not prompt.strip():
        raise ConfigError("the prompt is empty; pass it as an argument or on stdin.")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    check_adapter_path(args.adapter)
    require_causal_lm(args.model, "generate")
    model, tokenizer = load_model(args)
    [text] = generate_answers(model, tokenizer, [prompt], max_new_tokens=args.max_new_tokens, batch_size=1,
                              progress=False)
    print(text.strip())
    return 0
