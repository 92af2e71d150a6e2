"""`rankwise analyze`: spectral diagnostics of a model's weights, optionally against a fine-tune, as a report.

    rankwise analyze smollm2-135m                              # spectra, α, effective rank, WeLore
    rankwise analyze tiny-llama --compare runs/demo/adapter    # + intruder dimensions vs the fine-tune
    rankwise analyze smollm2-135m --compare runs/r1/adapter runs/r8/adapter   # several, side by side
    rankwise analyze smollm2-135m --gradients data.jsonl --heads --residual
    rankwise analyze runs/plain/model --residual --residual-of runs/attnres/model runs/ladder/model
    rankwise analyze smollm2-135m --suggest --gradients train.jsonl   # suggest.json: per-layer LoRA ranks

Each mode is one function `_mode_<name>(args, model, result)` that adds its section to `result`;
MODES lists them in the order they run. The report (report.json, PNGs, report.html) goes to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("analyze", help="spectral diagnostics of a model (and a fine-tune) as a report",
                            description=__doc__.split(":", 1)[1].split("\n\n")[0].strip())
    parser.add_argument("model",
                        help="embedded model name (smollm2-135m, tiny-llama, ...) or local HF folder")
    parser.add_argument("--compare", nargs="+", metavar="FINETUNED_OR_ADAPTER",
                        help="adapter folders (merged onto MODEL) or fine-tuned HF folders: count intruder "
                             "dimensions of each, side by side")
    parser.add_argument("--out", default=None, help="report folder (default: analysis-<model name>)")
    parser.add_argument("--targets", nargs="+", default=["all-linear"],
                        help="modules to analyze: all-linear (default), leaf names (q_proj v_proj) or globs")
    parser.add_argument("--k", type=int, default=10, help="top-k fine-tuned directions checked (default 10)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="intruder when max |cos| with the base's singular vectors is below this "
                             "(default 0.5)")
    parser.add_argument("--gradients", nargs="+", metavar="DATA.jsonl",
                        help="per-example gradient nuclear norm / effective rank of the answer-only loss; "
                             "ranks the examples, and the data sets, by quality (higher score = cleaner)")
    parser.add_argument("--rank-by", choices=["nuclear_norm", "effective_rank"], default="nuclear_norm",
                        help="the gradient metric that scores examples (default nuclear_norm)")
    parser.add_argument("--heads", action="store_true",
                        help="Q/K/V composition scores between attention heads and their low-rank channels")
    parser.add_argument("--residual", nargs="?", const="", default=None, metavar="TEXT",
                        help="hidden-state norm by depth on TEXT (a built-in paragraph if omitted)")
    parser.add_argument("--residual-of", nargs="+", default=[], metavar="MODEL",
                        help="with --residual: more models (e.g. pretrain runs with other --arch variants) "
                             "measured on the same text and plotted beside MODEL")
    parser.add_argument("--suggest", action="store_true",
                        help="write suggest.json: per-layer LoRA ranks and targets within --budget, from the "
                             "weight spectra (or the --gradients data's gradient spectra); a config for "
                             "`rankwise finetune --config`")
    parser.add_argument("--budget", type=int, default=None, metavar="N",
                        help="with --suggest: trainable parameters to spend (default: a uniform rank-8 LoRA "
                             "on the analyzed layers)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run)


def _targets(args: argparse.Namespace):
    return "all-linear" if args.targets == ["all-linear"] else list(args.targets)


def _mode_weights(args: argparse.Namespace, model, result: dict) -> None:
    from ..analyze import analyze_weights

    result["weights"] = analyze_weights(model, _targets(args), progress=not args.no_progress)
    summary = result["weights"]["summary"]
    alpha = summary["mean_alpha"]
    print(f"{summary['n_layers']} layers; mean alpha {alpha:.3f}" if alpha is not None
          else f"{summary['n_layers']} layers (too small for a power-law fit)")
    for name in summary["by_alpha"][:5]:
        layer = result["weights"]["layers"][name]
        print(f"  alpha {layer['alpha']:7.3f}  erank ratio {layer['effective_rank_ratio']:.3f}  {name}")
    print(f"WeLore: {len(summary['welore']['lrc'])} of {summary['n_layers']} layers low-rank (LRC) "
          f"at tau {summary['welore']['tau']:.4f}")


def _mode_compare(args: argparse.Namespace, model, result: dict) -> None:
    if not args.compare:
        return
    from ..analyze import compare
    from ..errors import ConfigError

    if args.k < 1 or not 0 < args.threshold <= 1:
        raise ConfigError(f"--k must be ≥ 1 and --threshold in (0, 1]; got {args.k} and {args.threshold}.")
    result["compare"] = {}
    for tuned in args.compare:
        cmp_ = compare(model, tuned, _targets(args), k=args.k, threshold=args.threshold,
                       progress=not args.no_progress)
        result["compare"][tuned] = cmp_
        per_type = ", ".join(f"{t} {v['intruders']}" for t, v in cmp_["by_type"].items())
        print(f"{tuned}: {cmp_['total_intruders']} intruder dimensions (k={args.k}, eps={args.threshold}; "
              f"{per_type})")


def _mode_gradients(args: argparse.Namespace, model, result: dict) -> None:
    if not args.gradients:
        return
    from ..analyze import gradient_spectra, rank_examples
    from ..data import load_examples

    result["gradients"] = {}
    for path in args.gradients:
        examples = load_examples(path)
        spectra = gradient_spectra(model, args.tokenizer, examples, targets=_targets(args),
                                   progress=not args.no_progress)
        ranking = rank_examples(model, args.tokenizer, examples, by=args.rank_by, spectra=spectra)
        score = sum(r["score"] for r in ranking) / len(ranking)
        result["gradients"][path] = {**spectra, "ranking": ranking, "rank_by": args.rank_by, "score": score}
        print(f"{path}: {len(examples)} examples, mean score {score:.4f} ({args.rank_by}); "
              f"lowest-scored (most suspect): {[r['index'] for r in ranking[::-1][:5]]}")


def _mode_heads(args: argparse.Namespace, model, result: dict) -> None:
    if not args.heads:
        return
    from ..analyze import head_composition

    result["heads"] = head_composition(model, progress=not args.no_progress)
    print(f"head composition (random baseline {result['heads']['baseline']:.3f}):")
    for t in result["heads"]["top"][:5]:
        share = t["channels"][0]["share"] if t["channels"] else 0.0
        print(f"  {t['kind']}: L{t['sender'][0]}H{t['sender'][1]} -> L{t['receiver'][0]}H{t['receiver'][1]} "
              f"score {t['score']:.3f}, top channel share {share:.2f}")


def _mode_residual(args: argparse.Namespace, model, result: dict) -> None:
    if args.residual is None:
        return
    from ..analyze import residual_norms
    from ..models import load

    kwargs = {"text": args.residual} if args.residual else {}
    result["residual"] = residual_norms(model, args.tokenizer, **kwargs)
    others = {}
    for other in args.residual_of:
        other_model, tokenizer = load(other)
        others[other] = residual_norms(other_model, tokenizer or args.tokenizer, **kwargs)
    if others:
        result["residual"]["others"] = others
    for name, res in {args.model: result["residual"], **others}.items():
        rms = res["rms"]
        print(f"hidden-state RMS by depth: {rms[0]:.3f} (first block's input) -> {rms[-1]:.3f} (last of "
              f"{len(rms) - 1}), max/min {max(rms) / min(rms):.2f}  {name}")


def _mode_suggest(args: argparse.Namespace, model, result: dict) -> None:
    if not args.suggest:
        return
    from ..analyze import batch_gradient_spectra, suggest_ranks
    from ..data import load_examples
    from ..surgery import find_targets

    spectra = None
    if args.gradients:
        examples = [row for path in args.gradients for row in load_examples(path)]
        spectra = batch_gradient_spectra(model, args.tokenizer, examples, targets=_targets(args))
    linear = find_targets(model, "all-linear")
    result["suggest"] = suggest_ranks(result["weights"]["layers"], budget=args.budget, gradients=spectra,
                                      all_linear=linear, model=args.model)
    s = result["suggest"]
    ranks = list(s["ranks"].values())
    print(f"suggested ranks ({s['source']}): {s['used']:,} of {s['budget']:,} parameters (uniform rank "
          f"{s['uniform_rank_at_budget']:.2f} at this budget); ranks {min(ranks)}-{max(ranks)}, "
          f"{sum(r > 0 for r in ranks)} of {len(ranks)} layers targeted")


MODES = [_mode_weights, _mode_compare, _mode_gradients, _mode_suggest, _mode_heads, _mode_residual]


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ..analyze import write_report
    from ..errors import ConfigError
    from ..io.atomic import check_writable, write_json
    from ..models import EMBEDDED, load, require_causal_lm

    # Checked before the model loads: a typo should not cost the minutes the weights section takes.
    for folder in args.compare or []:
        if not Path(folder).expanduser().is_dir():
            raise ConfigError(f"--compare {folder}: no such folder; pass an adapter or HF model folder.")
    for other in args.residual_of:
        if args.residual is None:
            raise ConfigError("--residual-of needs --residual (it adds models to that section).")
        if not Path(other).expanduser().exists() and other not in {*EMBEDDED, "tiny-llama"}:
            raise ConfigError(f"--residual-of {other}: no such model folder.")
    for data in args.gradients or []:
        if not Path(data).expanduser().is_file():
            raise ConfigError(f"--gradients {data}: no such file; "
                              "pass a .jsonl or .csv of prompt/answer rows.")
    if args.budget is not None and not args.suggest:
        raise ConfigError("--budget goes with --suggest.")
    if args.budget is not None and args.budget < 1:
        raise ConfigError(f"--budget must be a positive number of parameters, got {args.budget}.")
    if args.gradients:
        require_causal_lm(args.model, "analyze --gradients (an answer-only language-model loss)")
    out = Path(args.out or f"analysis-{Path(args.model).name}")
    check_writable(out)  # a bad --out fails now, not after the analysis
    model, args.tokenizer = load(args.model)  # carried on args so every mode keeps one signature
    result: dict = {"model": args.model}
    for mode in MODES:
        mode(args, model, result)
    report = write_report(result, out)
    if "suggest" in result:  # the snippet alone, so `rankwise finetune --config` reads it as it is
        write_json(out / "suggest.json", result["suggest"]["snippet"])
        print(f"suggestion: {out / 'suggest.json'}  (rankwise finetune --config {out / 'suggest.json'} "
              "task=... )")
    print(f"report: {report}")
    return 0
