"""`rankwise finetune`: train an adapter from a config file plus overrides, then report base vs tuned."""

from __future__ import annotations

import argparse
import dataclasses
import json

USAGE = "rankwise finetune [[--config] FILE] [--dry-run] [key=value | --key value ...]"
EXAMPLES = """examples:
  rankwise finetune examples/demo.json
  rankwise finetune --config examples/demo.json max_steps=20 --learning-rate 5e-4 --dry-run
  rankwise finetune model=tiny-llama task=iso-dates rank=4 method_config.svd_iters=2 method=pissa
  torchrun --nproc_per_node 2 -m rankwise.cli finetune --config examples/demo.json"""


def _keys_help() -> str:
    from ..train.config import ALIASES, TrainConfig

    lines = ["settings (config file keys; override with key=value or --key value; - and _ both work):"]
    for f in dataclasses.fields(TrainConfig):
        default = json.dumps(f.default if f.default is not dataclasses.MISSING else f.default_factory())
        lines.append(f"  {f.name:<28} {f.metadata.get('help', '')} [{default}]")
    aliases = ", ".join(f"{a}→{c}" for a, c in ALIASES.items())
    return "\n".join(lines) + "\n\naliases: " + aliases


def _verify_line(verify: dict) -> str:
    if "max_abs_diff" not in verify:
        return f"not run ({verify.get('skipped') or verify.get('error')})"
    rows = ", ".join(f"{row} {diff:.1e}" for row, diff in verify["max_abs_diff"].items())
    failed = f"; OVER TOLERANCE: {', '.join(verify['failed'])}" if verify["failed"] else ""
    return f"max |logit diff| vs unmerged: {rows or 'no row ran'}{failed}"


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "finetune", help="fine-tune an adapter (config file + overrides)", usage=USAGE,
        description=__doc__.split(":", 1)[1].strip(), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_keys_help() + "\n\n" + EXAMPLES, allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE", help="JSON config (YAML too when PyYAML is installed)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config (stdout, JSON) and an estimate of peak memory and "
                             "time per step (stderr), then exit, loading no weights")
    parser.set_defaults(run=run, accepts_overrides=True)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ..train.config import TrainConfig
    from .overrides import resolve_settings

    first = extra[0] if extra else ""
    if args.config is None and first.endswith((".json", ".yaml", ".yml")) and "=" not in first:
        args.config = extra.pop(0)  # `rankwise finetune demo.json`, as axolotl and LLaMA-Factory take it
    config = TrainConfig.from_dict(resolve_settings(args.config, extra))  # validated before any weights load
    if args.dry_run:  # the method's full config too, so its defaults for null fields are visible
        from ..train.estimate import dry_run_estimate, estimate_finetune

        resolved = {**config.to_dict(), "adapter_config": config.adapter_config().to_dict()}
        resolved["estimate"] = dry_run_estimate(lambda: estimate_finetune(config))  # its table: stderr
        print(json.dumps(resolved, indent=2))
        return 0
    from ..train import finetune

    result = finetune(config)
    if "adapter_path" not in result:  # a non-main process under torchrun: the main one reports
        return 0

    def share(value) -> str:
        return "n/a (no held-out examples)" if value is None else f"{value:.3f}"

    held_out = result["eval_examples"]
    print(f"base exact match:  {share(result['base_exact_match'])}  ({held_out} held-out examples)")
    print(f"tuned exact match: {share(result['tuned_exact_match'])}")
    print(f"adapter:    {result['adapter_path']}")
    if "verify" in result:
        print(f"verify:     {_verify_line(result['verify'])}")
    print(f"loss curve: {result['plot_path']}")
    print(f"log:        {result['log_path']}")
    return 0
