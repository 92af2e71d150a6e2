"""Suggested per-layer LoRA ranks (`rankwise analyze --suggest`) against uniform rank at the same budget.

On SmolLM2-135M-Instruct and two bundled tasks, three LoRA runs per task and seed, identical in
everything (steps, batches, learning rate, seed, alpha / rank = 2 on every layer) but the ranks:
    uniform    rank 8 on every linear layer: the budget (2,442,240 trainable parameters)
    weights    suggest_ranks from the weight spectra alone (task-independent)
    gradients  suggest_ranks from the gradient spectra of the task's first 32 training examples
Each suggestion goes through TrainConfig as the suggest.json snippet would (rank, rank_pattern,
alpha_pattern, targets) and must stay within the budget. Reported: held-out exact match and final loss.

    OMP_NUM_THREADS=1 python bench/suggest_vs_uniform.py [--tasks mental-math unit-conversion] [--seeds 0 1]

Tasks: `rankwise bench`'s two, which do not saturate in 30 steps; iso-dates does (uniform rank 8 reached
a training loss of 0.003 in 30 steps), so every variant would score the same on it. The learning rate
(3e-3) is LoRA's best in the `rankwise bench` sweep on these two tasks; it was fixed before this
comparison ran and is not tuned for either variant. A finished run (results.json in its folder under
--runs) is skipped when the script runs again.
Writes bench/results/suggest_vs_uniform.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from rankwise.analyze import analyze_weights, batch_gradient_spectra, suggest_ranks
from rankwise.data import bundled_task
from rankwise.io import atomic_path, write_json
from rankwise.models import load
from rankwise.surgery import find_targets
from rankwise.train import finetune
from rankwise.train.config import TrainConfig

VARIANTS = ("uniform", "weights", "gradients")


def suggestions(args) -> dict:
    """{task: {variant: snippet-and-summary}}: the weight suggestion is shared, gradients per task."""
    model, tokenizer = load(args.model)
    layers = analyze_weights(model, progress=False)["layers"]
    linear = find_targets(model, "all-linear")
    by_weights = suggest_ranks(layers, all_linear=linear)
    out = {}
    for task in args.tasks:
        train, _ = bundled_task(task)
        spectra = batch_gradient_spectra(model, tokenizer, train, max_examples=args.grad_examples,
                                         max_length=args.max_length)
        by_gradients = suggest_ranks(layers, all_linear=linear, gradients=spectra)
        uniform = {"snippet": {"method": "lora", "targets": "all-linear", "rank": 8, "alpha": 16.0},
                   "used": by_weights["budget"], "ranks": dict.fromkeys(layers, 8)}
        out[task] = {"uniform": uniform, "weights": by_weights, "gradients": by_gradients}
    return out


def rank_summary(ranks: dict[str, int]) -> dict:
    """Mean rank per layer type and per block, and the range: what the suggestion changed."""
    by_type, by_block = defaultdict(list), defaultdict(list)
    for name, r in ranks.items():
        by_type[name.rpartition(".")[2]].append(r)
        by_block[int(name.split(".layers.")[1].split(".")[0])].append(r)
    return {"min": min(ranks.values()), "max": max(ranks.values()),
            "targeted": sum(r > 0 for r in ranks.values()), "layers": len(ranks),
            "mean_by_type": {t: statistics.fmean(v) for t, v in by_type.items()},
            "mean_by_block": [statistics.fmean(by_block[b]) for b in sorted(by_block)]}


def train_one(args, task: str, variant: str, seed: int, snippet: dict) -> dict:
    where = Path(args.runs) / task / f"{variant}-seed{seed}"
    if not (where / "results.json").is_file():
        config = TrainConfig.from_dict({
            **snippet, "model": args.model, "task": task, "learning_rate": args.lr, "seed": seed,
            "max_steps": args.steps, "warmup_ratio": 0.1, "per_device_train_batch_size": args.batch,
            "max_length": args.max_length, "eval_size": args.eval_size, "max_new_tokens": args.max_new_tokens,
            "eval_base": False, "save_every": 0, "output_dir": str(where), "progress": False})
        finetune(config)
    result = json.loads((where / "results.json").read_text())
    return {"task": task, "variant": variant, "seed": seed, "exact_match": result["tuned_exact_match"],
            "final_loss": result["final_loss"], "trainable": result["trainable_parameters"]}


def write_markdown(report: dict, path: Path) -> None:
    s = report["settings"]
    lines = ["# Suggested ranks vs uniform rank at the same budget", "",
             f"{s['model']}, LoRA, {s['steps']} steps × batch {s['batch']}, lr {s['lr']}, alpha/rank 2 on "
             f"every layer, max length {s['max_length']}, exact match on {s['eval_size']} held-out examples, "
             f"seeds {s['seeds']}; gradient spectra from {s['grad_examples']} training examples. "
             f"Machine: {s['machine']}, {s['threads']} thread(s); {report['minutes']:.0f} min in all.", "",
             "| task | variant | trainable | ranks (min–max, layers targeted) | exact match per seed | mean "
             "| final loss (mean) |", "|---|---|---:|---|---|---:|---:|"]
    for row in report["summary"]:
        r = report["suggestions"][row["task"]][row["variant"]]
        lines.append(f"| {row['task']} | {row['variant']} | {row['trainable']:,} | {r['min']}–{r['max']}, "
                     f"{r['targeted']}/{r['layers']} | {', '.join(f'{v:.3f}' for v in row['per_seed'])} | "
                     f"{row['mean']:.3f} | {row['final_loss']:.3f} |")
    lines += ["", "Mean rank by layer type (weights / gradients, per task):", ""]
    for task, by_variant in report["suggestions"].items():
        for variant in ("weights", "gradients"):
            means = ", ".join(f"{t} {v:.1f}" for t, v in by_variant[variant]["mean_by_type"].items())
            lines.append(f"- {task}, {variant}: {means}")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", nargs="+", default=["mental-math", "unit-conversion"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--eval-size", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--grad-examples", type=int, default=32)
    parser.add_argument("--runs", default="runs/suggest_vs_uniform")
    parser.add_argument("--out", default="bench/results/suggest_vs_uniform")
    args = parser.parse_args()
    start = time.perf_counter()
    suggested = suggestions(args)
    rows = []
    for seed in args.seeds:  # seed outermost: a stopped run has whole seeds to resume from
        for task in args.tasks:
            for variant in VARIANTS:
                s = suggested[task][variant]
                row = train_one(args, task, variant, seed, s["snippet"])
                assert row["trainable"] == s["used"] <= suggested[task]["weights"]["budget"], row
                rows.append(row)
                print(f"{task} {variant} seed {seed}: exact match {row['exact_match']:.3f}, "
                      f"final loss {row['final_loss']:.3f}, {row['trainable']:,} trainable", flush=True)
    summary = []
    for task in args.tasks:
        for variant in VARIANTS:
            mine = [r for r in rows if r["task"] == task and r["variant"] == variant]
            summary.append({"task": task, "variant": variant, "trainable": mine[0]["trainable"],
                            "per_seed": [r["exact_match"] for r in mine],
                            "mean": statistics.fmean(r["exact_match"] for r in mine),
                            "final_loss": statistics.fmean(r["final_loss"] for r in mine)})
    settings = {k: getattr(args, k) for k in ("model", "tasks", "seeds", "steps", "lr", "batch", "max_length",
                                              "eval_size", "max_new_tokens", "grad_examples")}
    settings |= {"machine": platform.machine(), "threads": torch.get_num_threads(),
                 "torch": torch.__version__}
    report = {"settings": settings, "minutes": (time.perf_counter() - start) / 60, "summary": summary,
              "runs": rows,
              "suggestions": {t: {v: {**rank_summary(s["ranks"]), "snippet": s["snippet"]}
                                  for v, s in by.items()} for t, by in suggested.items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), report)
    write_markdown(report, out.with_suffix(".md"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
