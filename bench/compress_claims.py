"""Issue 10's perplexity claims for post-training compression of SmolLM2-135M, measured in one run.

Part "eora": held-out perplexity of RTN 3-bit, RTN 2-bit and magnitude 2:4 with no compensation, the
plain-SVD compensation (svd-comp) and EoRA, at ranks 16, 64 and 128. Claim: EoRA < svd-comp < none at every
base and rank. Also the wall time of one full `rankwise.compress(model, "eora", bits=3, rank=64)` with 64
calibration sequences of 256 tokens (claim: under 5 minutes on 2 CPU cores).
Part "budget": perplexity against the parameters kept, for uniform truncated SVD (svd), activation-aware
SVD (asvd, svd-llm) and WeLore's non-uniform ranks at the same parameter budgets. Claims: asvd beats svd,
and welore beats uniform ranks, at the same parameter count.
Part "bipft": perplexity of sign binarization (BWN scale) of every linear layer, plain and with BiPFT's
residual estimator at ranks 1 and 8. Claim: the estimator lowers the binarized model's error.

Calibration: 64 blocks of 256 tokens from the bundled corpus' calibration split, one statistics pass shared
by every setting (rankwise.compress(..., stats=)); evaluation: blocks of the disjoint evaluation split.

    python bench/compress_claims.py [--part eora|budget|bipft|all] [--eval-samples 16]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import rankwise  # noqa: E402
from rankwise.compress.calibration import collect_stats  # noqa: E402
from rankwise.compress.report import model_size  # noqa: E402
from rankwise.data.text import corpus_text, token_blocks  # noqa: E402
from rankwise.models import load  # noqa: E402
from rankwise.surgery import target_paths  # noqa: E402
from rankwise.train.evaluate import perplexity  # noqa: E402

BASES = {"rtn-3bit": {"bits": 3}, "rtn-2bit": {"bits": 2}, "prune-2:4": {"pattern": "2:4"}}
RANKS = (16, 64, 128)
BUDGETS = (0.9, 0.8, 0.7)  # share of the targeted layers' parameters kept
RESULTS = Path(__file__).parent / "results"


def _batches(blocks):
    return [{"input_ids": blocks[i: i + 4]} for i in range(0, len(blocks), 4)]


def eora_part(model, calibration, evaluation, stats, say) -> dict:
    started = time.perf_counter()
    timed = rankwise.compress(copy.deepcopy(model), "eora", bits=3, rank=64,
                              calibration=_batches(calibration), progress=False)
    eora_seconds = time.perf_counter() - started
    rows = []
    for base, fields in BASES.items():
        only = "rtn" if "bits" in fields else "prune"
        settings = [("none", only, None)] + [(m, m, r) for m in ("svd-comp", "eora") for r in RANKS]
        for label, method, rank in settings:
            compressed = copy.deepcopy(model)
            extra = {} if rank is None else {"rank": rank}
            rankwise.compress(compressed, method, stats=stats, progress=False, **fields, **extra)
            if label == "eora" and rank == 64 and base == "rtn-3bit":  # the timed run built the same model
                compressed = timed
            row = {"base": base, "compensation": label, "rank": rank,
                   "perplexity": perplexity(compressed, evaluation, progress=False),
                   "bytes": model_size(compressed)["bytes"]}
            say(row)
            rows.append(row)
    holds = all(_ppl(rows, b, "eora", r) < _ppl(rows, b, "svd-comp", r) < _ppl(rows, b, "none", None)
                for b in BASES for r in RANKS)
    return {"rows": rows, "eora_3bit_rank64_seconds": round(eora_seconds, 1), "ordering_holds": holds}


def _ppl(rows, base, compensation, rank):
    return next(r["perplexity"] for r in rows if (r["base"], r["compensation"], r["rank"]) ==
                (base, compensation, rank))


def budget_part(model, evaluation, stats, say) -> dict:
    paths = target_paths(model, "all-linear")
    targeted = sum(model.get_submodule(p).weight.numel() for p in paths)
    rows = []
    for budget in BUDGETS:
        for method in ("svd", "asvd", "svd-llm", "welore"):
            compressed = copy.deepcopy(model)
            rankwise.compress(compressed, method, ratio=budget, stats=stats, progress=False)
            kept = model_size(compressed)["parameters"] - (model_size(model)["parameters"] - targeted)
            row = {"budget": budget, "method": method, "kept_share": kept / targeted,
                   "perplexity": perplexity(compressed, evaluation, progress=False)}
            say(row)
            rows.append(row)
    by = {(r["budget"], r["method"]): r["perplexity"] for r in rows}
    return {"rows": rows, "targeted_parameters": targeted,
            "asvd_beats_svd": all(by[b, "asvd"] < by[b, "svd"] for b in BUDGETS),
            "svd_llm_beats_svd": all(by[b, "svd-llm"] < by[b, "svd"] for b in BUDGETS),
            "welore_beats_svd": all(by[b, "welore"] < by[b, "svd"] for b in BUDGETS)}


def bipft_part(model, evaluation, stats, say) -> dict:
    rows = []
    for rank in (1, 8):
        compressed = rankwise.compress(copy.deepcopy(model), "bipft", rank=rank, stats=stats, progress=False)
        estimated = perplexity(compressed, evaluation, progress=False)
        rankwise.disable(compressed)  # the same binarized weights without the estimator
        rows.append({"rank": rank, "perplexity_with_estimator": estimated,
                     "perplexity_plain_sign": perplexity(compressed, evaluation, progress=False)})
        say(rows[-1])
    return {"rows": rows, "estimator_helps": all(r["perplexity_with_estimator"] < r["perplexity_plain_sign"]
                                                 for r in rows)}


def plot(results: dict, path: Path) -> None:
    columns = len(BASES) * ("eora" in results) + ("budget" in results)
    if not columns:  # the bipft part alone is a two-row table
        return
    figure, axes = plt.subplots(1, columns, figsize=(4.2 * columns, 3.6), squeeze=False)
    axes, column = axes[0], 0
    if "eora" in results:
        rows = results["eora"]["rows"]
        for base in BASES:
            ax = axes[column]
            column += 1
            none = _ppl(rows, base, "none", None)
            ax.axhline(none, color="grey", linestyle=":", label="no compensation")
            for label in ("svd-comp", "eora"):
                ax.plot(RANKS, [_ppl(rows, base, label, r) for r in RANKS], marker="o", label=label)
            ax.set(title=f"SmolLM2 {base}", xlabel="rank", ylabel="held-out perplexity", xscale="log",
                   yscale="log")
            ax.set_xticks(RANKS, [str(r) for r in RANKS], minor=False)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.legend(fontsize=7)
    if "budget" in results:
        ax = axes[column]
        for method in ("svd", "asvd", "svd-llm", "welore"):
            points = [r for r in results["budget"]["rows"] if r["method"] == method]
            ax.plot([r["kept_share"] for r in points], [r["perplexity"] for r in points], marker="o",
                    label=method)
        ax.set(title="SmolLM2, low-rank at a budget", xlabel="share of linear parameters kept",
               ylabel="held-out perplexity", yscale="log")
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["eora", "budget", "bipft", "all"], default="all")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--out", help="results JSON [bench/results/compress_<part or claims>.json]")
    args = parser.parse_args()
    started = time.perf_counter()
    model, tokenizer = load("smollm2-135m")
    calibration = token_blocks(tokenizer, corpus_text("calibration"), 256, args.calib_samples)
    evaluation = token_blocks(tokenizer, corpus_text("evaluation"), 256, args.eval_samples)
    results = {"model": "smollm2-135m", "calibration": list(calibration.shape),
               "evaluation": list(evaluation.shape),
               "base_perplexity": perplexity(model, evaluation, progress=False)}
    print(f"base perplexity {results['base_perplexity']:.3f}", flush=True)
    stats_started = time.perf_counter()
    stats = collect_stats(model, target_paths(model, "all-linear"), _batches(calibration), progress=False)
    results["statistics_seconds"] = round(time.perf_counter() - stats_started, 1)
    say = lambda row: print(json.dumps(row), flush=True)  # noqa: E731
    out = Path(args.out or RESULTS / f"compress_{'claims' if args.part == 'all' else args.part}.json")
    if args.part in ("eora", "all"):
        results["eora"] = eora_part(model, calibration, evaluation, stats, say)
        out.write_text(json.dumps(results, indent=2) + "\n")  # kept if a later part fails
    if args.part in ("budget", "all"):
        results["budget"] = budget_part(model, evaluation, stats, say)
        out.write_text(json.dumps(results, indent=2) + "\n")
    if args.part in ("bipft", "all"):
        results["bipft"] = bipft_part(model, evaluation, stats, say)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in results.items() if k not in ("eora", "budget", "bipft")}))


if __name__ == "__main__":
    main()
