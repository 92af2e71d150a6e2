"""`rankwise eval`: exact match of a model, with an optional adapter, on a bundled task or a data file.

With --named-adapter NAME=DIR, repeated, several adapters run in mixed batches (rankwise.adapters.mixed):
each example under every adapter, or, with --route-field, each row of --data under the adapter it names.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from .common import (
    BASE,
    add_adapters_option,
    add_model_options,
    check_adapter_path,
    load_with_adapters,
    named_adapters,
    routed_answers,
)


def add_parser(sub) -> None:
    parser = sub.add_parser("eval", help="exact match of a model (+ adapter) on a task or data file",
                            description=__doc__.split(":", 1)[1].strip(), allow_abbrev=False)
    add_model_options(parser)
    add_adapters_option(parser)
    parser.add_argument("--route-field", metavar="FIELD", help="with --named-adapter and --data: the column "
                        f"naming each row's adapter ({BASE} for the base model) [each row under every one]")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help="a bundled task (evaluated on its test split unless --split train)")
    source.add_argument("--data", metavar="FILE", help="a JSONL/CSV file of prompt/answer rows (all rows)")
    parser.add_argument("--split", choices=["test", "train"], default="test", help="split of --task [test]")
    parser.add_argument("--prompt-field", default="prompt", help="prompt column of --data [prompt]")
    parser.add_argument("--answer-field", default="answer", help="answer column of --data [answer]")
    parser.add_argument("--limit", type=int, help="evaluate only the first N examples")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per answer [16]")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generation batch [16]")
    parser.add_argument("--predictions", metavar="FILE",
                        help="also write prompt/answer/prediction rows as JSONL")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def read_examples(args: argparse.Namespace) -> list[dict]:
    from ..data import bundled_task, list_tasks, load_examples

    if args.task is not None:
        if args.task not in list_tasks():
            raise ConfigError(f"unknown task {args.task!r}; bundled tasks: {', '.join(list_tasks())}.")
        train, test = bundled_task(args.task)
        examples = test if args.split == "test" else train
    else:
        if not Path(args.data).is_file():
            raise ConfigError(f"--data {args.data}: no such file; check the path.")
        examples = load_examples(args.data, args.prompt_field, args.answer_field)
    if args.limit is not None:
        if args.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {args.limit}.")
        examples = examples[: args.limit]
    return list(examples)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ..io.atomic import atomic_path, check_writable
    from ..models import require_causal_lm
    from ..train.evaluate import normalize_answer

    examples = read_examples(args)  # bad task or file: fail before loading weights
    for option in ("max_new_tokens", "batch_size"):
        if getattr(args, option) < 1:
            flag = "--" + option.replace("_", "-")
            raise ConfigError(f"{flag} must be at least 1, got {getattr(args, option)}.")
    if args.predictions:
        if Path(args.predictions).is_dir():
            raise ConfigError(f"--predictions {args.predictions} is a folder; pass a file path (.jsonl).")
        check_writable(Path(args.predictions).parent)
    check_adapter_path(args.adapter)
    folders = named_adapters(args)
    examples, routes = route_examples(args, examples, folders)
    require_causal_lm(args.model, "eval")
    model, tokenizer = load_with_adapters(args, folders)
    predictions = routed_answers(model, tokenizer, [e["prompt"] for e in examples], routes,
                                 max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                 progress=not args.no_progress)
    hits = [normalize_answer(p) == normalize_answer(e["answer"]) for p, e in zip(predictions, examples)]
    if args.predictions:
        rows = [dict(e, prediction=p, **({"adapter": r} if routes else {}))
                for e, p, r in zip(examples, predictions, routes or examples)]
        with atomic_path(args.predictions) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    source = f"{args.task} ({args.split})" if args.task else args.data
    report = _score(hits)
    by_adapter = {name: _score([h for h, r in zip(hits, routes) if r == name])
                  for name in dict.fromkeys(routes or [])}
    if args.json:
        print(json.dumps({**report, "model": args.model, "adapter": args.adapter, "source": source,
                          **({"adapters": folders, "by_adapter": by_adapter} if routes else {})}))
    else:
        lines = {"": report} if not routes or args.route_field else {}  # each under all: per adapter only
        for label, score in (lines | {f" [{n}]": s for n, s in by_adapter.items()}).items():
            hits_of = f"{score['hits']}/{score['examples']}"
            print(f"exact match{label}: {score['exact_match']:.3f} ({hits_of}) on {source}")
    return 0


def _score(hits: list[bool]) -> dict:
    return {"exact_match": sum(hits) / len(hits), "examples": len(hits), "hits": sum(hits)}


def route_examples(args: argparse.Namespace, examples: list[dict], folders: dict[str, str]):
    """(examples, the adapter of each or None): --route-field's names, or every example under every
    adapter (grouped by adapter, so each batch slices rather than gathers rows)."""
    from ..data import load_examples

    if args.route_field and not folders:
        raise ConfigError("--route-field routes rows to adapters; load them with --named-adapter NAME=DIR.")
    if not folders:
        return examples, None
    if not args.route_field:
        return [e for _ in folders for e in examples], [name for name in folders for _ in examples]
    if args.data is None:
        raise ConfigError("--route-field is a column of --data; with --task, drop it to run every adapter.")
    # The route column read as if it were the answer column: same checks (present, non-empty strings).
    routes = [row["answer"] for row in load_examples(args.data, args.prompt_field, args.route_field)]
    routes = routes[: len(examples)]
    unknown = sorted(set(routes) - set(folders) - {BASE})
    if unknown:
        raise ConfigError(f"--route-field {args.route_field} names {unknown}, not among the named adapters "
                          f"{list(folders)} (or {BASE}).")
    return examples, routes
