"""`rankwise retrieve`: natural-language → code retrieval on the Python standard library (or any source
tree): BM25, a frozen MiniLM, ADR's low-rank residual on its embeddings, and a LoRA of MiniLM with as
many trained numbers, each test query ranked against every test document of packages never trained on.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  rankwise retrieve                                       # the standard library, every method
  rankwise retrieve --methods bm25 dense adr --train-pairs 500
  rankwise retrieve --root ~/src/myproject --split dev --out runs/retrieve"""


def add_parser(sub) -> None:
    from ..apps.retrieval_compare import METHODS

    parser = sub.add_parser("retrieve", help="NL→code retrieval: BM25, MiniLM, ADR and LoRA compared",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--root", metavar="DIR", help="a folder of Python sources [this CPython's stdlib]")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="NAME",
                        help=f"some of {', '.join(METHODS)} [all]")
    parser.add_argument("--split", choices=["test", "dev"], default="test", help="the held-out split [test]")
    parser.add_argument("--train-pairs", type=int, default=1000, metavar="N",
                        help="training pairs for ADR and LoRA (0: all) [1000]")
    parser.add_argument("--lora-steps", type=int, default=150, metavar="N", help="LoRA training steps [150]")
    parser.add_argument("--out", metavar="DIR", help="write results.json there")
    parser.add_argument("--select-on-dev", action="store_true",
                        help="ADR and LoRA keep their best epoch / step by dev-split recall@10")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from ..apps.retrieval_compare import compare_retrieval
    from ..data.code_search import code_search_splits
    from ..errors import ConfigError
    from ..io import write_json

    if args.train_pairs < 0 or args.lora_steps < 0:
        raise ConfigError("--train-pairs and --lora-steps must be 0 or more.")
    if args.select_on_dev and args.split == "dev":
        raise ConfigError("--select-on-dev chooses on the dev split, so it cannot also score it; use "
                          "--split test.")
    splits = code_search_splits(args.root)
    train, held_out = splits["train"][: args.train_pairs or None], splits[args.split]
    if not held_out:
        raise ConfigError(f"the {args.split} split of {args.root or 'the standard library'} is empty; its "
                          "packages all hashed into train. Give a larger source tree.")
    dev = splits["dev"] if args.select_on_dev else None
    results = compare_retrieval(train, held_out, tuple(args.methods), lora_steps=args.lora_steps, dev=dev)
    print(f"{len(held_out)} {args.split} queries against {len(held_out)} documents; {len(train)} training "
          f"pairs")
    print(f"{'method':<10} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'nDCG@10':>8} {'trained':>9}")
    for name, r in results.items():
        print(f"{name:<10} {r['recall@1']:6.3f} {r['recall@5']:6.3f} {r['recall@10']:6.3f} "
              f"{r['ndcg@10']:8.3f} {r['trained']:9,}")
    if args.out:
        path = Path(args.out) / "results.json"
        write_json(path, {"split": args.split, "train_pairs": len(train), "test_pairs": len(held_out),
                          "results": results, "python": splits["python"]})
        print(f"results: {path}")
    return 0
