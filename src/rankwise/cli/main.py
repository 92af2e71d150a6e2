"""`rankwise <command>`: parses the command line, runs the subcommand, turns rankwise errors into one line.

Each subcommand module offers add_parser(subparsers) and run(args, extra) -> exit code; `extra` holds
the tokens argparse did not recognise, which only `finetune` accepts (as config overrides).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import RankwiseError
from . import (
    analyze,
    anomaly,
    bench,
    compress,
    convert,
    export,
    finetune,
    generate,
    merge,
    methods,
    pretrain,
    rerank,
    retrieve,
    verify,
)
from . import eval as eval_cmd

COMMANDS = [finetune, pretrain, eval_cmd, generate, methods, analyze, compress, merge, export, convert,
            verify, bench, retrieve, rerank, anomaly]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help (subcommands inherit it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`.\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(
        prog="rankwise", description="Low-rank methods across a model's life.",
        epilog="Run `rankwise <command> --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"rankwise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rankwise` binary; returns the exit code (2 for any rankwise error)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args, extra)
    except RankwiseError as err:
        print(f"rankwise {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rankwise {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
