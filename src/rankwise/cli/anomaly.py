"""`rankwise anomaly`: ResAD++ residual-feature anomaly detection on scikit-learn's digits: a backbone and
a feature constraintor trained on the known digits, tested on unseen digits with a few normal references
each; image AUROC for raw features, residual features, and the residual with no constraintor.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  rankwise anomaly                                        # known 0-4, unseen 5-9, 2/4/8 shots
  rankwise anomaly --shots 4 --known 0 1 2 --unseen 7 8 --plain --out runs/anomaly"""


def add_parser(sub) -> None:
    parser = sub.add_parser("anomaly", help="ResAD++ anomaly detection on unseen digit classes",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--shots", nargs="+", type=int, default=[2, 4, 8], metavar="K",
                        help="normal reference images per unseen class [2 4 8]")
    parser.add_argument("--known", nargs="+", type=int, default=[0, 1, 2, 3, 4], metavar="DIGIT",
                        help="digits the backbone and constraintor train on [0 1 2 3 4]")
    parser.add_argument("--unseen", nargs="+", type=int, default=[5, 6, 7, 8, 9], metavar="DIGIT",
                        help="digits tested with few-shot references [5 6 7 8 9]")
    parser.add_argument("--plain", action="store_true",
                        help="the paper's residual x − x* instead of the released code's (x − x*)²")
    parser.add_argument("--epochs", type=int, default=30, metavar="N", help="constraintor epochs [30]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", metavar="DIR", help="write results.json there")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from ..apps.anomaly import anomaly_benchmark
    from ..errors import ConfigError
    from ..io import write_json

    digits = set(args.known) | set(args.unseen)
    if set(args.known) & set(args.unseen) or not digits <= set(range(10)) or args.epochs < 1:
        raise ConfigError("--known and --unseen must be disjoint digits 0-9, and --epochs at least 1.")
    result = anomaly_benchmark(tuple(args.shots), args.seed, known=tuple(args.known),
                               unseen=tuple(args.unseen), squared=not args.plain, epochs=args.epochs)
    print(f"image AUROC on unseen digits {args.unseen} (mean over classes), backbone trained on {args.known}")
    print(f"{'features':<26}" + "".join(f"{f'{k}-shot':>9}" for k in args.shots))
    for name, by_shot in result["auroc"].items():
        print(f"{name:<26}" + "".join(f"{by_shot[str(k)]['mean']:9.3f}" for k in args.shots))
    if args.out:
        path = Path(args.out) / "results.json"
        write_json(path, result)
        print(f"results: {path}")
    return 0
