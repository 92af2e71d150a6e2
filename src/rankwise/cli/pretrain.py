"""`rankwise pretrain`: train a Llama-architecture model from scratch with a memory-efficient method.

Methods are the optimizers (adamw, galore, dct, random, gradnorm-lorp) and the parameterizations
(lowrank, sltrain, lost, sst, relora). The text is the bundled corpus (CPython's documentation topics,
held-out topics for validation) or --corpus FILE. Prints progress, validation perplexity and a memory
report; writes the model, log, loss curve and results into --out, with checkpoints every --save-every
steps that --resume latest continues bitwise.
"""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError

EXAMPLES = """examples:
  rankwise pretrain --size tiny --method galore --steps 300
  rankwise pretrain --size tiny --method sltrain --rank 32 --option density=0.03 --out runs/sltrain
  rankwise pretrain --size tiny --method lowrank --reset-every 50 --save-every 100 --resume latest
  rankwise pretrain --size small --method dct --option update_interval=50 --corpus my_text.txt
  rankwise pretrain --size tiny --arch attnres-block --arch-option blocks=2 --out runs/attnres
  torchrun --nproc_per_node 2 -m rankwise.cli pretrain --size tiny --method galore"""

# flag -> PretrainConfig field, type, help
FLAGS = (
    ("--size", "size", str, "tiny (0.87 M parameters, minutes on 2 CPU cores) or small (25.6 M) [tiny]"),
    ("--method", "method", str, "optimizer or parameterization, see above [adamw]"),
    ("--steps", "max_steps", int, "optimizer steps [200]"),
    ("--rank", "rank", int, "projection or factor rank [hidden size / 4]"),
    ("--lr", "learning_rate", float, "peak learning rate [1e-3]"),
    ("--batch-size", "per_device_train_batch_size", int, "sequences per micro-batch [16]"),
    ("--accumulation", "gradient_accumulation_steps", int, "micro-batches per step [1]"),
    ("--seq-len", "max_length", int, "bytes per sequence [256]"),
    ("--arch", "arch", str, "a residual-stream variant: attnres-full, attnres-block, ladder, residual-scale"),
    ("--optimizer", "optimizer", str, "the optimizer of a parameterization's factors [adamw]"),
    ("--refactor-every", "refactor_every", int, "lowrank/sltrain/lost: refactorize B A every N steps"),
    ("--reset-every", "reset_every", int, "lowrank/sltrain/lost: reset the factors' moments every N steps"),
    ("--corpus", "corpus", str, "a .txt or .jsonl (\"text\" field) file instead of the bundled corpus"),
    ("--out", "output_dir", str, "output folder [runs/pretrain]"),
    ("--eval-every", "eval_every", int, "validation perplexity every N steps [0: at the end]"),
    ("--save-every", "save_every", int, "checkpoint every N steps [0: none]"),
    ("--resume", "resume", str, "latest, or a checkpoint folder"),
    ("--seed", "seed", int, "seed of weights, factors and data order [42]"),
)


def add_parser(sub) -> None:
    parser = sub.add_parser("pretrain", help="pre-train a small Llama from scratch with a low-rank method",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    for flag, field, kind, text in FLAGS:
        metavar = {int: "N", float: "X"}.get(kind, flag[2:].upper().replace("-", "_"))
        parser.add_argument(flag, dest=field, type=kind, metavar=metavar, help=text)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a method option (JSON value), e.g. density=0.03 or update_interval=50; "
                             "repeatable")
    parser.add_argument("--arch-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a residual variant option (JSON value), e.g. blocks=2, upper=2, scale=1/n; "
                             "repeatable")
    parser.add_argument("--config", metavar="FILE", help="a JSON file of settings; flags override it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved settings (stdout, JSON) and an estimate of peak memory and "
                             "time per step (stderr), then exit")
    parser.set_defaults(run=run)


def parse_options(items: list[str], flag: str = "--option") -> dict:
    """{"density": 0.03, ...} from ["density=0.03", ...]; values are JSON, else text."""
    options = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{flag} {item!r}: write KEY=VALUE, e.g. {flag} density=0.03.")
        try:
            options[key.strip().replace("-", "_")] = json.loads(text)
        except json.JSONDecodeError:
            options[key.strip().replace("-", "_")] = text
    return options


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ..train.config import read_config_file
    from ..train.pretrain_config import PretrainConfig

    values = read_config_file(args.config) if args.config else {}
    given = {field: getattr(args, field) for _, field, _, _ in FLAGS}
    values.update({field: value for field, value in given.items() if value is not None})
    if args.option:
        values["method_config"] = {**values.get("method_config", {}), **parse_options(args.option)}
    if args.arch_option:
        arch_options = parse_options(args.arch_option, "--arch-option")
        values["arch_config"] = {**values.get("arch_config", {}), **arch_options}
    if args.no_progress:
        values["progress"] = False
    config = PretrainConfig.from_dict(values)  # every setting checked before anything is built
    if args.dry_run:
        from ..train.estimate import dry_run_estimate, estimate_pretrain

        estimate = dry_run_estimate(lambda: estimate_pretrain(config))  # its table goes to stderr
        print(json.dumps({**config.to_dict(), "estimate": estimate}, indent=2))
        return 0
    from ..train.pretrain import pretrain

    result = pretrain(config)
    if "model_path" not in result:  # a non-main process under torchrun: the main one reports
        return 0
    from ..optim import format_memory

    print(f"validation perplexity: {result['val_perplexity']:.3f} per byte after {result['steps']} steps "
          f"({result['seconds_per_step']:.2f} s/step)")
    print(format_memory(result["memory"]))
    print(f"model:      {result['model_path']}")
    print(f"loss curve: {result['plot_path']}")
    print(f"results:    {result['output_dir']}/results.json")
    return 0
