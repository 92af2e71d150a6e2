"""`rankwise compress`: compress a model (or squeeze an adapter), report what it cost and saved, and save it.

The report (printed, and written as compress_report.json in --out) gives parameters and bytes before and
after, held-out perplexity of a causal LM (for an encoder: the cosine of its mean-pooled outputs to the
original's), exact match on a bundled task, and the time taken. Calibration and evaluation text are the
two disjoint splits of the bundled corpus (rankwise.data.text) unless --calib names a file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import ConfigError

EXAMPLES = """examples:
  rankwise compress smollm2-135m --method eora --bits 3 --rank 64 --out out/smollm2-3bit-eora
  rankwise compress minilm-l6 --method svd --ratio 0.5 --out out/minilm-half
  rankwise compress smollm2-135m --method svd-comp --pattern 2:4 --rank 16 --no-eval
  rankwise compress out/adapter-r32 --method lora-squeeze --rank 8 --out out/adapter-r8"""


def add_parser(sub) -> None:
    parser = sub.add_parser("compress", help="compress a model: low-rank factors, quantization, pruning",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("model", metavar="MODEL",
                        help="smollm2-135m, minilm-l6, tiny-llama, a local HF or rankwise model folder "
                             "(an adapter folder for lora-squeeze)")
    parser.add_argument("--method", required=True, help="a compression method (`rankwise methods`)")
    for flag, kind, text in (("--rank", int, "rank kept per layer"),
                             ("--ratio", float, "share of each layer's parameters kept, in (0, 1)"),
                             ("--bits", int, "quantization bits: 2, 3, 4 or 8"),
                             ("--group-size", int, "input columns sharing a quantization scale [64]"),
                             ("--sparsity", float, "unstructured pruning: share of weights removed"),
                             ("--pattern", str, "n:m pruning pattern, e.g. 2:4")):
        parser.add_argument(flag, type=kind, help=text)
    parser.add_argument("--targets", help="comma-separated module names or globs [all-linear]")
    parser.add_argument("--exclude", help="comma-separated module names or globs to leave alone")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="any other config field of the method, e.g. --set svd_iters=2")
    parser.add_argument("--calib", metavar="FILE", help="calibration text (.txt, or .jsonl with a text "
                        "field) [the bundled corpus' calibration split]")
    parser.add_argument("--calib-samples", type=int, default=64, help="calibration sequences [64]")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence [256]")
    parser.add_argument("--eval-samples", type=int, default=32, help="held-out sequences for perplexity [32]")
    parser.add_argument("--task", default="iso-dates", help="bundled task for exact match [iso-dates]")
    parser.add_argument("--eval-limit", type=int, default=50, help="task examples evaluated [50]")
    parser.add_argument("--no-eval", action="store_true", help="skip perplexity and exact match")
    parser.add_argument("--out", metavar="DIR", help="save the compressed model (a rankwise model folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the settings, print them (stdout, JSON) and an estimate of peak memory "
                             "(stderr), then exit, loading no weights")
    parser.set_defaults(run=run)


def _fields(args: argparse.Namespace) -> dict:
    fields = {}
    for text in args.set:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {text!r}: write FIELD=VALUE, e.g. --set svd_iters=2.")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value  # a bare word, such as a pattern name
    for key in ("rank", "ratio", "bits", "group_size", "sparsity", "pattern"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    for key in ("targets", "exclude"):
        if getattr(args, key):
            fields[key] = [part.strip() for part in getattr(args, key).split(",") if part.strip()]
    return fields


def _check_out(args: argparse.Namespace) -> None:
    from ..io.atomic import check_writable

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder path.")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"--out {out} already holds files (a model?); pass --overwrite to replace it, or "
                          "pick a new folder.")
    check_writable(out)


def _check_args(args: argparse.Namespace) -> None:
    from ..data import list_tasks

    if not args.no_eval and args.task not in list_tasks():
        raise ConfigError(f"unknown task {args.task!r}; bundled tasks: {', '.join(list_tasks())}.")
    for option in ("calib_samples", "seq_len", "eval_samples", "eval_limit"):
        if getattr(args, option) < 1:
            flag = "--" + option.replace("_", "-")
            raise ConfigError(f"{flag} must be at least 1, got {getattr(args, option)}.")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ..compress import COMPRESSORS

    cls = COMPRESSORS.get(args.method)
    config = cls.config_class.create(args.method, **_fields(args))  # bad settings fail before any load
    _check_args(args)
    if args.out:
        _check_out(args)
    if args.dry_run:
        return _dry_run(args, cls, config)
    if cls.takes_adapter:
        return _squeeze(args, config)
    from ..data.text import read_text_file

    calib_text = read_text_file(args.calib) if args.calib else None
    report = compress_and_report(args, config, calib_text)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _dry_run(args: argparse.Namespace, cls, config) -> int:
    from ..compress.estimate import EstimateUnavailable, estimate_compress
    from ..train.estimate import dry_run_estimate

    def make():
        if cls.takes_adapter:
            raise EstimateUnavailable(f"{args.method} squeezes an adapter folder, not a model")
        return estimate_compress(args.model, args.method, config, args.seq_len)

    resolved = {"model": args.model, "method": args.method, "config": config.to_dict(),
                "calib_samples": args.calib_samples, "seq_len": args.seq_len}
    resolved["estimate"] = dry_run_estimate(make)  # its table: stderr
    print(json.dumps(resolved, indent=2))
    return 0


def _squeeze(args: argparse.Namespace, config) -> int:
    from ..compress.lora_squeeze import squeeze_adapter_folder

    if not args.out:
        raise ConfigError("lora-squeeze writes a new adapter folder: pass --out DIR.")
    started = time.perf_counter()
    squeeze_adapter_folder(args.model, args.out, config)
    print(f"squeezed {args.model} to rank {config.rank} in {time.perf_counter() - started:.1f} s: {args.out}")
    return 0


def compress_and_report(args: argparse.Namespace, config, calib_text: str | None) -> dict:
    from ..compress import compress
    from ..compress.report import model_size
    from ..data.text import corpus_text, token_blocks
    from ..io import save_model
    from ..models import load
    from .quality import is_causal_lm, pooled_outputs, quality

    started = time.perf_counter()
    model, tokenizer = load(args.model)
    if tokenizer is None:
        raise ConfigError(f"{args.model} has no tokenizer saved with it; calibration and evaluation need "
                          "one. Save the model with its tokenizer.")
    evaluation = None if args.no_eval else token_blocks(
        tokenizer, corpus_text("evaluation"), args.seq_len, args.eval_samples, "the bundled evaluation text")
    size_before = model_size(model)
    original = None if evaluation is None or is_causal_lm(model) else pooled_outputs(model, evaluation)
    before = {} if evaluation is None else quality(model, tokenizer, evaluation, args, original)
    compress_started = time.perf_counter()
    source = args.calib or "the bundled corpus' calibration split"
    blocks = token_blocks(tokenizer, calib_text if calib_text is not None else corpus_text("calibration"),
                          args.seq_len, args.calib_samples, source)
    batches = [{"input_ids": blocks[i: i + 4]} for i in range(0, len(blocks), 4)]
    compress(model, args.method, config=config, calibration=batches, progress=not args.no_progress)
    compress_seconds = time.perf_counter() - compress_started
    after = {} if evaluation is None else quality(model, tokenizer, evaluation, args, original)
    size_after = model_size(model)
    report = {
        "model": args.model, "method": args.method, "config": config.to_dict(),
        "parameters": {"before": size_before["parameters"], "after": size_after["parameters"],
                       "ratio": size_after["parameters"] / size_before["parameters"]},
        "bytes": {"before": size_before["bytes"], "after": size_after["bytes"],
                  "ratio": size_after["bytes"] / size_before["bytes"]},
        **{key: {"before": before[key], "after": after[key]} for key in after},
        "calibration": {"source": source, "sequences": len(blocks), "length": args.seq_len},
        "seconds": {"compression": round(compress_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
    }
    if args.out:
        save_model(model, args.out, tokenizer, extra_json={"compress_report.json": report})
        report["out"] = args.out
    return report


def format_report(report: dict) -> str:
    lines = [f"{report['method']} on {report['model']}"]
    for key in ("parameters", "bytes"):
        r = report[key]
        lines.append(f"  {key + ':':<16}{r['before']:>14,} -> {r['after']:>14,}  ({r['ratio']:.3f}x)")
    for key, value in report.items():
        if isinstance(value, dict) and set(value) == {"before", "after"}:
            label = key.replace("_", " ") + ":"
            lines.append(f"  {label:<16}{value['before']:>14.4f} -> {value['after']:>14.4f}")
    seconds = report["seconds"]
    lines.append(f"  time:           {seconds['compression']} s compressing, {seconds['total']} s in all")
    if "out" in report:
        lines.append(f"  saved to {report['out']} (report: compress_report.json)")
    return "\n".join(lines)
