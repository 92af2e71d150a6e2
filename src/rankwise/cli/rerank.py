"""`rankwise rerank`: Rank-R1's setwise reranking of a BM25 first stage on the NL→code set, with a causal
language model (SmolLM2 by default, optionally with a rankwise adapter). Reports nDCG@10 and recall@1 of
the first stage and of the reranked lists over the same queries. Zero-shot here: the GRPO training that
teaches the <think>/<answer> format is not built yet, and a malformed answer keeps the first stage's order.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  rankwise rerank --queries 20 --candidates 8 --set-size 4 --k 5
  rankwise rerank --model smollm2-135m --adapter runs/ranker/adapter --root ~/src/project --split dev"""


def add_parser(sub) -> None:
    parser = sub.add_parser("rerank", help="Rank-R1 setwise reranking of a BM25 first stage",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--model", default="smollm2-135m", help="a causal LM [smollm2-135m]")
    parser.add_argument("--adapter", metavar="DIR", help="a rankwise or PEFT adapter folder to load onto it")
    parser.add_argument("--root", metavar="DIR", help="a folder of Python sources [this CPython's stdlib]")
    parser.add_argument("--split", choices=["test", "dev"], default="test")
    parser.add_argument("--queries", type=int, default=20, metavar="N", help="queries reranked [20]")
    parser.add_argument("--candidates", type=int, default=20, metavar="N", help="first-stage top N [20]")
    parser.add_argument("--set-size", type=int, default=4, metavar="N", help="documents per comparison [4]")
    parser.add_argument("--k", type=int, default=10, help="documents placed by the heapsort [10]")
    parser.add_argument("--max-new-tokens", type=int, default=96, metavar="N", help="per comparison [96]")
    parser.add_argument("--out", metavar="DIR", help="write results.json there")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    import torch

    from ..apps.rerank import generated_choice, rerank
    from ..apps.retrieval import bm25_scores, ndcg_at, recall_at
    from ..data.code_search import code_search_splits
    from ..errors import ConfigError
    from ..io import load_adapter, write_json
    from ..models import load, require_causal_lm

    if min(args.queries, args.candidates, args.k, args.max_new_tokens) < 1 or args.set_size < 2:
        raise ConfigError("--queries, --candidates, --k and --max-new-tokens must be at least 1, "
                          "--set-size at least 2.")
    if args.set_size > 20:
        raise ConfigError(f"--set-size {args.set_size} is more than the 20 documents one prompt holds in "
                          "Rank-R1; use 2 to 20.")
    require_causal_lm(args.model, "rerank")
    pairs = code_search_splits(args.root)[args.split]
    if not pairs:
        raise ConfigError(f"the {args.split} split is empty; give a larger source tree.")
    documents = [p["document"] for p in pairs]
    queries = [p["query"] for p in pairs][: args.queries]
    first_stage = bm25_scores(queries, documents).argsort(dim=1, descending=True).tolist()
    model, tokenizer = load(args.model)
    if args.adapter:
        load_adapter(model, args.adapter)

    def choose_among(query, texts):
        return generated_choice(model, tokenizer, query, texts, max_new_tokens=args.max_new_tokens)

    reranked = [rerank(order, documents, query, choose_among, candidates=args.candidates, k=args.k,
                       set_size=args.set_size) for query, order in zip(queries, first_stage, strict=True)]

    def metrics(orders):
        ranks = torch.tensor([order.index(i) for i, order in enumerate(orders)])
        return {"ndcg@10": ndcg_at(ranks, 10), "recall@1": recall_at(ranks, 1)}

    results = {"first_stage": metrics(first_stage), "reranked": metrics(reranked)}
    print(f"{len(queries)} {args.split} queries, BM25 top {args.candidates} reranked in sets of "
          f"{args.set_size} by {args.model}{' + ' + args.adapter if args.adapter else ''}")
    for name, r in results.items():
        print(f"{name:<12} nDCG@10 {r['ndcg@10']:.3f}  recall@1 {r['recall@1']:.3f}")
    if args.out:
        path = Path(args.out) / "results.json"
        write_json(path, {**results, "queries": len(queries), "candidates": args.candidates,
                          "set_size": args.set_size, "model": args.model, "adapter": args.adapter})
        print(f"results: {path}")
    return 0
