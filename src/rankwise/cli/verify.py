"""`rankwise verify`: check that an adapter gives the same logits however it is run.

On a fixed set of prompts, the logits of the adapter applied unmerged are compared with the same model
merged, the adapter exported to PEFT and loaded by PEFT, and the model exported merged and loaded by plain
transformers (rankwise.train.verify). The max |difference| of each is printed and written into the adapter's
adapter.json under "verify"; a row over --tolerance x max |logit| makes the exit code 1.
"""

from __future__ import annotations

import argparse
import json

EXAMPLES = """examples:
  rankwise verify runs/lora/adapter --model smollm2-135m
  rankwise verify runs/dora/adapter --model smollm2-135m --json --no-record"""


def add_parser(sub) -> None:
    parser = sub.add_parser("verify", help="compare an adapter's logits unmerged, merged, in PEFT and merged "
                                           "in plain transformers",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("adapter", metavar="ADAPTER", help="an adapter folder (rankwise or PEFT format)")
    parser.add_argument("--model", required=True, help="its base model: smollm2-135m, tiny-llama or a local "
                                                       "HF folder (a causal LM)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest difference allowed, as a share of the largest |logit| [1e-3]")
    parser.add_argument("--no-record", action="store_true", help="do not write the result into adapter.json")
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="load the adapter even if it was saved for another base model")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ..errors import ConfigError
    from ..train.verify import ROWS, verify_adapter

    if not args.tolerance >= 0:
        raise ConfigError(f"--tolerance must be >= 0, got {args.tolerance}.")
    result = verify_adapter(args.model, args.adapter, tolerance=args.tolerance, record=not args.no_record,
                            allow_base_mismatch=args.allow_base_mismatch)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"verify {args.adapter} ({result['method']}) on {args.model}: {result['prompts']} prompts, "
              f"{result['tokens']} tokens, max |logit| {result['max_abs_logit']:.3g}")
        for row in ROWS:
            if row in result["skipped"]:
                print(f"  {row:<13} skipped: {result['skipped'][row]}")
            else:
                verdict = "FAILS" if row in result["failed"] else "ok"
                print(f"  {row:<13} max |diff| {result['max_abs_diff'][row]:.3g}   {verdict}")
        if "recorded" in result:
            print(f"recorded in {result['recorded']}")
        elif not args.no_record:
            print(f"not recorded: {args.adapter} is a PEFT-format folder; only rankwise's adapter.json "
                  "keeps a verify entry")
    return 1 if result["failed"] else 0
