"""`rankwise rerank`: Rank-R1's setwise reranking of a BM25 first stage on the NL→code set, with a causal
language model (SmolLM2 by default, optionally with a rankwise adapter). Reports nDCG@10 and recall@1 of
the first stage and of the reranked lists over the same queries. With --train N it first trains a LoRA
with GRPO (TRL) on N train-split queries, after an optional format-only cold start, and reports the
reward curve and the reranking before and after. A malformed answer keeps the first stage's order.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  rankwise rerank --queries 20 --candidates 8 --set-size 4 --k 5
  rankwise rerank --train 200 --cold-start 30 --grpo-steps 60 --out runs/rank-r1
  rankwise rerank --model smollm2-135m --adapter runs/rank-r1/adapter --root ~/src/project --split dev"""


def add_parser(sub) -> None:
    parser = sub.add_parser("rerank", help="Rank-R1 setwise reranking of a BM25 first stage (GRPO training)",
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
    train = parser.add_argument_group("GRPO training (Rank-R1's LoRA: r 16, alpha 32, dropout 0.05)")
    train.add_argument("--train", type=int, default=0, metavar="N",
                       help="train on the first N train-split queries first [0: no training]")
    train.add_argument("--cold-start", type=int, default=0, metavar="STEPS",
                       help="format-only supervised steps before GRPO (random labels) [0]")
    train.add_argument("--grpo-steps", type=int, default=50, metavar="N", help="GRPO steps [50]")
    train.add_argument("--lr", type=float, default=1e-4, help="GRPO learning rate [1e-4]")
    train.add_argument("--generations", type=int, default=4, metavar="G", help="completions per prompt [4]")
    train.add_argument("--completion-tokens", type=int, default=48, metavar="N",
                       help="longest GRPO completion [48]")
    parser.add_argument("--out", metavar="DIR", help="write results.json (and the adapter, reward.png) there")
    parser.set_defaults(run=run)


def _check(args) -> None:
    from ..errors import ConfigError

    if min(args.queries, args.candidates, args.k, args.max_new_tokens) < 1 or args.set_size < 2:
        raise ConfigError("--queries, --candidates, --k and --max-new-tokens must be at least 1, "
                          "--set-size at least 2.")
    if args.set_size > 20:
        raise ConfigError(f"--set-size {args.set_size} is more than the 20 documents one prompt holds in "
                          "Rank-R1; use 2 to 20.")
    if min(args.train, args.cold_start) < 0 or min(args.grpo_steps, args.completion_tokens) < 1 \
            or args.generations < 2 or not args.lr > 0:
        raise ConfigError("--train and --cold-start must be at least 0, --grpo-steps and --completion-tokens "
                          "at least 1, --generations at least 2 (GRPO compares completions), --lr positive.")
    if args.train and not args.out:
        raise ConfigError("--train writes an adapter; give --out DIR for it.")
    if args.train and args.adapter:
        raise ConfigError("--train trains a new LoRA on the base model; drop --adapter, or rerank with the "
                          "adapter alone.")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    import torch
    from tqdm.auto import tqdm

    from ..apps.rerank import generated_choice, rerank
    from ..apps.retrieval import bm25_scores, ndcg_at, recall_at
    from ..data.code_search import code_search_splits
    from ..errors import ConfigError
    from ..io import load_adapter, write_json
    from ..models import load, require_causal_lm

    _check(args)
    require_causal_lm(args.model, "rerank")
    splits = code_search_splits(args.root)
    pairs = splits[args.split]
    if not pairs:
        raise ConfigError(f"the {args.split} split is empty; give a larger source tree.")
    documents = [p["document"] for p in pairs]
    queries = [p["query"] for p in pairs][: args.queries]
    first_stage = bm25_scores(queries, documents).argsort(dim=1, descending=True).tolist()
    model, tokenizer = load(args.model)
    if args.adapter:
        load_adapter(model, args.adapter)

    def ranking() -> dict:
        def choose_among(query, texts):
            return generated_choice(model, tokenizer, query, texts, max_new_tokens=args.max_new_tokens)

        pairs = tqdm(list(zip(queries, first_stage, strict=True)), desc="rerank", unit="query")
        orders = [rerank(order, documents, query, choose_among, candidates=args.candidates, k=args.k,
                         set_size=args.set_size) for query, order in pairs]
        ranks = torch.tensor([order.index(i) for i, order in enumerate(orders)])
        return {"ndcg@10": ndcg_at(ranks, 10), "recall@1": recall_at(ranks, 1)}

    def save() -> None:  # after every stage: a long run that dies keeps what it measured
        if args.out:
            write_json(Path(args.out) / "results.json", {
                **results, "queries": len(queries), "candidates": args.candidates, "set_size": args.set_size,
                "model": args.model, "adapter": args.adapter, "train": args.train,
                "cold_start": args.cold_start, "grpo_steps": args.grpo_steps, "lr": args.lr,
                "generations": args.generations})

    first_ranks = torch.tensor([order.index(i) for i, order in enumerate(first_stage)])
    results = {"first_stage": {"ndcg@10": ndcg_at(first_ranks, 10), "recall@1": recall_at(first_ranks, 1)},
               "reranked": ranking()}
    save()
    if args.train:
        _train(args, model, tokenizer, splits, ranking, results, save)
    print(f"{len(queries)} {args.split} queries, BM25 top {args.candidates} reranked in sets of "
          f"{args.set_size} by {args.model}{' + ' + args.adapter if args.adapter else ''}")
    for name, r in results.items():
        if name not in ("reward_curve", "reward_means"):
            print(f"{name:<16} nDCG@10 {r['ndcg@10']:.3f}  recall@1 {r['recall@1']:.3f}")
    if args.train:
        means = results["reward_means"]
        print(f"GRPO mean reward: first {means['steps']} steps {means['first']:.3f}, "
              f"last {means['steps']} steps {means['last']:.3f}")
    if args.out:
        print(f"results: {Path(args.out) / 'results.json'}")
    return 0


def _train(args, model, tokenizer, splits: dict, ranking, results: dict, save) -> None:
    """GRPO (after the optional cold start) on the train split; the rankings after each stage go into
    `results`, saved after each."""
    from pathlib import Path

    from ..adapters import adapt
    from ..apps import rerank_train
    from ..apps.retrieval import bm25_scores
    from ..io import save_adapter
    from ..train.plot import plot_loss

    out = Path(args.out)
    documents = [p["document"] for p in splits["train"]]
    queries = [p["query"] for p in splits["train"][: args.train]]
    order = bm25_scores(queries, documents).argsort(dim=1, descending=True).tolist()
    examples = rerank_train.setwise_examples(queries, documents, order, set_size=args.set_size)
    adapt(model, "lora", **rerank_train.PAPER_LORA)
    if args.cold_start:
        rerank_train.cold_start(model, tokenizer, examples, output_dir=str(out / "cold_start"),
                                steps=args.cold_start)
        results["after_cold_start"] = ranking()
        save()
    curve = rerank_train.train_grpo(model, tokenizer, examples, output_dir=str(out / "grpo"),
                                    steps=args.grpo_steps, learning_rate=args.lr,
                                    generations=args.generations,
                                    max_completion_length=args.completion_tokens)
    results["reward_curve"] = curve
    results["reward_means"] = rerank_train.reward_means(curve)
    save_adapter(model, out / "adapter")
    plot_loss(curve, out / "reward.png", title="Rank-R1 GRPO: mean reward per step", value="reward")
    save()
    results["after_grpo"] = ranking()
    save()
