"""`rankwise convert`: turn an adapter of any mergeable method into a plain LoRA (rankwise.adapters.convert).

Each layer's full update merged_weight(W) − W is cut by SVD to --rank R, or per layer to the smallest rank
that keeps --energy E of its squared Frobenius norm (a per-layer rank pattern). The LoRA (alpha = rank, so
its scale is 1) is saved in --out in rankwise's format, with PEFT's files beside it when --format peft, and
convert_report.json: each layer's rank and relative error ‖ΔW − ΔW_r‖_F / ‖ΔW‖_F, also printed.
"""

from __future__ import annotations

import argparse
import json

EXAMPLES = """examples:
  rankwise convert runs/dora/adapter --model smollm2-135m --to lora --rank 16 --out out/dora-as-lora
  rankwise convert runs/pissa/adapter --model smollm2-135m --to lora --energy 0.99 --format peft \\
      --out out/pissa-as-lora"""


def add_parser(sub) -> None:
    parser = sub.add_parser("convert", help="convert an adapter of any mergeable method into a plain LoRA",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("adapter", metavar="ADAPTER", help="an adapter folder (rankwise or PEFT format)")
    parser.add_argument("--model", required=True, help="its base model: smollm2-135m, minilm-l6, tiny-llama, "
                                                       "or a local HF or rankwise model folder")
    parser.add_argument("--to", required=True, choices=("lora",), help="the target method (lora)")
    parser.add_argument("--rank", type=int, help="the LoRA rank of every layer (capped at a layer's full "
                                                 "rank, where the LoRA is exact)")
    parser.add_argument("--energy", type=float, help="per layer, the smallest rank keeping this share of the "
                                                     "update's squared norm, in (0, 1], e.g. 0.99")
    parser.add_argument("--out", required=True, metavar="DIR", help="the output adapter folder")
    parser.add_argument("--format", choices=("rankwise", "peft"), default="rankwise",
                        help="peft: also write PEFT's adapter files beside rankwise's [rankwise]")
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="load the adapter even if it was saved for another base model")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from ..adapters.convert import (
        check_choice,
        check_convertible,
        check_output,
        convert_to_lora,
        save_converted,
    )
    from ..errors import AdapterFileError, ConfigError
    from ..io import load_adapter, read_adapter
    from ..io.atomic import check_writable
    from ..models import load

    # Every check that needs no model first: loading one can take a while.
    check_choice(args.rank, args.energy)
    if not Path(args.adapter).is_dir():
        raise AdapterFileError(f"{args.adapter}: no such folder; point at the folder holding adapter.json "
                               "(or PEFT's adapter_config.json).")
    saved = read_adapter(args.adapter)
    check_convertible(saved.method)
    if args.format == "peft" and getattr(saved.config, "modules_to_save", None):
        raise ConfigError("PEFT's format cannot hold this adapter's modules_to_save copies; convert with "
                          "--format rankwise.")
    check_output(args.out, args.adapter)
    check_writable(args.out)
    model, _ = load(args.model)
    load_adapter(model, args.adapter, allow_base_mismatch=args.allow_base_mismatch)
    report = convert_to_lora(model, saved.name, rank=args.rank, energy=args.energy)
    report["source"], report["output"] = str(args.adapter), str(args.out)
    formats = ("rankwise", "peft") if args.format == "peft" else ("rankwise",)
    save_converted(model, args.out, report, formats)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(report))
    return 0


def table(report: dict) -> str:
    """The report as text: one row per layer, then the totals."""
    choice = f"rank {report['rank']}" if report["rank"] is not None else f"energy {report['energy']}"
    params = report["parameters"]
    width = max(len("layer"), *(len(path) for path in report["layers"]))
    lines = [f"converted {report['method']} to lora ({choice}) over {len(report['layers'])} layers: "
             f"{params['lora']:,} parameters (the {report['method']} adapter has {params['source']:,})",
             f"{'layer':<{width}}  {'shape':>11}  {'rank':>5}  {'rel. error':>10}"]
    for path, row in report["layers"].items():
        shape = "×".join(str(n) for n in row["shape"])
        lines.append(f"{path:<{width}}  {shape:>11}  {row['rank']:>5}  {row['relative_error']:>10.3e}")
    lines.append(f"overall relative error {report['relative_error']:.3e} (largest layer "
                 f"{report['max_relative_error']:.3e})")
    if report["modules_to_save"]:
        lines.append(f"copied unchanged (modules_to_save): {', '.join(report['modules_to_save'])}")
    lines.append(f"saved in {report['output']}, with this report in convert_report.json")
    return "\n".join(lines)
