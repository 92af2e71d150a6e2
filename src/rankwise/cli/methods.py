"""`rankwise methods`: every registered adapter method (its paper, what trains, whether it merges, its
config fields with their defaults), then every compression method (its paper and config fields), then
every pre-training method: the optimizers and the parameterizations (`rankwise pretrain --method`), then
every merge method (`rankwise merge --method`), then every residual-stream variant (`rankwise pretrain
--arch`, rankwise.arch.apply)."""

from __future__ import annotations

import argparse
import json
import textwrap


def add_parser(sub) -> None:
    parser = sub.add_parser("methods", help="list the adapter, compression, pre-training and merge methods",
                            description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument("--compress", action="store_true", help="with --json: list the compression methods")
    parser.add_argument("--pretrain", action="store_true", help="with --json: list the pre-training methods")
    parser.add_argument("--merge", action="store_true", help="with --json: list the merge methods")
    parser.add_argument("--arch", action="store_true", help="with --json: list the residual-stream variants")
    parser.set_defaults(run=run)


def describe_methods() -> list[dict]:
    from ..adapters import ADAPTERS

    return [{"name": n, "paper": c.paper, "url": c.url, "trains": c.trains, "mergeable": c.mergeable,
             "fields": c.config_class().to_dict()}
            for n, c in ((name, ADAPTERS.get(name)) for name in ADAPTERS.names())]


def describe_compressors() -> list[dict]:
    from ..compress import COMPRESSORS

    return [{"name": n, "paper": c.paper, "url": c.url, "calibration": c.calibration,
             "fields": _defaults(c.config_class)}
            for n, c in ((name, COMPRESSORS.get(name)) for name in COMPRESSORS.names())]


def describe_pretraining() -> list[dict]:
    """The optimizers (their options) and parameterizations (their paper and fields) pretrain takes."""
    import inspect

    from ..optim import OPTIMIZERS
    from ..reparam import REPARAMS

    optimizers = []
    for name in OPTIMIZERS.names():
        factory = OPTIMIZERS.get(name)
        options = {k: v.default for k, v in inspect.signature(factory).parameters.items()
                   if k not in ("groups", "lr") and v.default is not inspect.Parameter.empty}
        summary = " ".join(inspect.getdoc(factory).split()).split(". ")[0].rstrip(".") + "."
        optimizers.append({"name": name, "kind": "optimizer", "paper": summary, "url": "", "fields": options})
    return optimizers + [{"name": n, "kind": "parameterization", "paper": c.paper, "url": c.url,
                          "fields": _defaults(c.config_class)}
                         for n, c in ((name, REPARAMS.get(name)) for name in REPARAMS.names())]


def describe_mergers() -> list[dict]:
    from ..merging import MERGERS

    return [{"name": n, "paper": m.paper, "url": m.url,
             "output": {"basis": "an RMM basis"}.get(m.result, "adapter or model"),
             "inputs": "plain LoRA adapters" if m.needs_low_rank else "any mergeable adapters or models",
             "fields": {}} for n, m in ((name, MERGERS.get(name)) for name in MERGERS.names())]


def describe_architectures() -> list[dict]:
    import dataclasses

    from ..arch import ARCHS, ArchConfig

    shared = {f.name for f in dataclasses.fields(ArchConfig)}
    return [{"name": n, "paper": c.paper, "url": c.url,
             "fields": {k: v for k, v in _defaults(c.config_class).items() if k not in shared}}
            for n, c in ((name, ARCHS.get(name)) for name in ARCHS.names())]


def _defaults(config_class) -> dict:
    import dataclasses

    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(config_class)}


def run(args: argparse.Namespace, extra: list[str]) -> int:
    rows, compressors, pretraining = describe_methods(), describe_compressors(), describe_pretraining()
    mergers, architectures = describe_mergers(), describe_architectures()
    if args.json:
        chosen = compressors if args.compress else pretraining if args.pretrain else mergers if args.merge \
            else architectures if args.arch else rows
        print(json.dumps(chosen, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['paper']}")
        indent = " " * (width + 2)
        print(textwrap.fill(f"trains: {r['trains']}", 100, initial_indent=indent,
                            subsequent_indent=indent + "  "))
        print(f"{indent}mergeable: {'yes' if r['mergeable'] else 'no'}   {r['url']}")
        fields = ", ".join(f"{k}={json.dumps(v)}" for k, v in r["fields"].items())
        print(textwrap.fill(f"fields: {fields}", 100, initial_indent=indent, subsequent_indent=indent + "  "))
    for title, section in (("compression methods (rankwise compress)", compressors),
                           ("pre-training methods (rankwise pretrain)", pretraining),
                           ("merge methods (rankwise merge)", mergers),
                           ("residual-stream variants (rankwise pretrain --arch, rankwise.arch.apply)",
                            architectures)):
        print(f"\n{title}:")
        width = max(len(r["name"]) for r in section)
        for r in section:
            indent = " " * (width + 2)
            print(f"{r['name']:<{width}}  {r['paper']}")
            reads = f"reads calibration {r['calibration']}   " if r.get("calibration") else ""
            kind = f"{r['kind']}   " if "kind" in r else f"inputs: {r['inputs']}   " if "inputs" in r else ""
            if reads or kind or r["url"]:
                print(f"{indent}{kind}{reads}{r['url']}".rstrip())
            if r["fields"]:
                fields = ", ".join(f"{k}={json.dumps(v)}" for k, v in r["fields"].items())
                print(textwrap.fill(f"fields: {fields}", 100, initial_indent=indent,
                                    subsequent_indent=indent + "  "))
    return 0
