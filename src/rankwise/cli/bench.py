"""`rankwise bench`: every adapter method on the same tasks and step budget, each at its best learning rate.

For each method and task: a learning-rate sweep, more seeds at the best rate, then held-out exact match
(mean ± spread), trainable parameters, adapter size, step time, peak memory, merged-inference parity, and
PEFT's step-time and memory ratios where PEFT has the method (rankwise.train.compare). Finished runs are
kept under --runs and skipped when the command runs again.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  rankwise bench --quick                                     # every method on tiny-llama, about a minute
  rankwise bench --methods lora dora pissa --tasks mental-math --steps 30
  rankwise bench --methods lora svfit --data my_rows.jsonl --lrs 1e-4 3e-4 1e-3 3e-3 --seeds 0 1 2"""


def add_parser(sub) -> None:
    parser = sub.add_parser("bench", help="compare adapter methods, each at its best learning rate",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--methods", nargs="+", metavar="NAME", help="methods to compare [all]")
    parser.add_argument("--tasks", nargs="+", metavar="TASK",
                        help="bundled tasks [mental-math unit-conversion]")
    parser.add_argument("--data", metavar="FILE", help="a prompt/answer JSONL file instead of --tasks")
    parser.add_argument("--model", help="smollm2-135m, tiny-llama or a local folder [smollm2-135m]")
    parser.add_argument("--steps", type=int, help="optimizer steps per run [30]")
    parser.add_argument("--lrs", nargs="+", type=float, metavar="LR",
                        help="learning rates, each × the method's lr_scale [3e-4 1e-3 3e-3 1e-2]")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="S",
                        help="the first sweeps the rates, the others rerun the best [0 1]")
    parser.add_argument("--extend", type=int, metavar="N",
                        help="rates tried past the grid's edge while the best rate sits on it [2]")
    parser.add_argument("--eval-size", type=int, metavar="N", help="held-out examples per run [40]")
    parser.add_argument("--no-probe", action="store_true", help="skip step time, memory and PEFT parity")
    parser.add_argument("--quick", action="store_true",
                        help="tiny-llama, one task, 3 steps, 2 rates: checks everything runs (not a result)")
    parser.add_argument("--out", metavar="DIR", help="report folder: results.json, results.md, PNGs "
                        "[bench/results/bench]")
    parser.add_argument("--runs", metavar="DIR", help="each run's adapter and log, and the probes; a rerun "
                        "skips what is there [runs/bench]")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ..train.compare import BenchConfig, bench

    given = {"methods": args.methods, "tasks": args.tasks, "data": args.data, "model": args.model,
             "steps": args.steps, "lrs": args.lrs, "seeds": args.seeds, "eval_size": args.eval_size,
             "extend": args.extend, "out": args.out, "runs": args.runs}
    given = {k: v for k, v in given.items() if v is not None}
    if args.no_probe:
        given["probe"] = False
    config = BenchConfig.quick(**given) if args.quick else BenchConfig(**given)
    records = bench(config)
    best = max(records, key=lambda r: r["accuracy"])
    print(f"rankwise bench: {len(records)} method × task results in {config.out} (results.json, results.md, "
          f"plots); best: {best['method']} on {best['task']}, {best['accuracy']:.3f} at lr {best['lr']:g}")
    return 0
