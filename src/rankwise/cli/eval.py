"""`rankwise eval`: exact match of a model, with an optional adapter, on a bundled task or a data file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from .common import add_model_options, check_adapter_path, load_model


def add_parser(sub) -> None:
    parser = sub.add_parser("eval", help="exact match of a model (+ adapter) on a task or data file",
                            description=__doc__.split(":", 1)[1].strip(), allow_abbrev=False)
    add_model_options(parser)
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
    from ..train.evaluate import exact_match

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
    require_causal_lm(args.model, "eval")
    model, tokenizer = load_model(args)
    result = exact_match(model, tokenizer, examples, max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size, progress=not args.no_progress)
    if args.predictions:
        rows = [dict(e, prediction=p) for e, p in zip(examples, result["predictions"])]
        with atomic_path(args.predictions) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    source = f"{args.task} ({args.split})" if args.task else args.data
    hits = round(result["exact_match"] * len(examples))
    if args.json:
        print(json.dumps({"exact_match": result["exact_match"], "examples": len(examples), "hits": hits,
                          "model": args.model, "adapter": args.adapter, "source": source}))
    else:
        print(f"exact match: {result['exact_match']:.3f} ({hits}/{len(examples)}) on {source}")
    return 0
