"""Do layer-wise gradient spectra tell clean examples from corrupted ones? AUC on SmolLM2 + iso-dates.

    python bench/gradient_quality.py [--examples 40] [--model smollm2-135m]

The check of "How Instruction and Reasoning Data shape Post-Training: Data Quality through the Lens of
Layer-wise Gradients" (Li et al.): take iso-dates training examples and give half of them a wrong
answer (the answers of that half rotated by one, so every one is another example's date). For each
example, `gradient_spectra` computes the response-only gradient's nuclear norm and effective rank per
layer; `rank_examples` turns each into a score (higher = cleaner). The AUC is P(score of a clean
example > score of a corrupted one): 0.5 is chance, 1.0 a perfect split. Reported for all linear
layers (rankwise's default) and for the attention projections only (the paper's choice).

Results: bench/results/gradient_quality.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rankwise.analyze import gradient_spectra, rank_examples
from rankwise.analyze.gradients import auc
from rankwise.data import bundled_task
from rankwise.models import load

TARGETS = {"all-linear": "all-linear", "attention": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def corrupted_half(examples: list[dict]) -> tuple[list[dict], list[bool]]:
    """The first half unchanged, the second half with answers rotated by one; and which are clean."""
    half = len(examples) // 2
    wrong = [e["answer"] for e in examples[half:]]
    wrong = wrong[1:] + wrong[:1]
    rows = examples[:half] + [dict(e, answer=a) for e, a in zip(examples[half:], wrong)]
    return rows, [True] * half + [False] * (len(examples) - half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--out", default="bench/results/gradient_quality.json")
    args = parser.parse_args()

    model, tokenizer = load(args.model)
    train, _ = bundled_task("iso-dates")
    examples, clean = corrupted_half(list(train[: args.examples]))
    rows = {}
    for name, targets in TARGETS.items():
        started = time.perf_counter()
        spectra = gradient_spectra(model, tokenizer, examples, targets=targets)
        seconds = time.perf_counter() - started
        rows[name] = {"layers": len(spectra["layers"]), "seconds": round(seconds, 1)}
        for by in ("nuclear_norm", "effective_rank"):
            scores = {r["index"]: r["score"]
                      for r in rank_examples(model, tokenizer, examples, by=by, spectra=spectra)}
            rows[name][f"auc_{by}"] = auc([scores[i] for i, ok in enumerate(clean) if ok],
                                          [scores[i] for i, ok in enumerate(clean) if not ok])
        losses = [r["loss"] for r in spectra["examples"]]
        # the loss itself as a baseline signal: lower loss = cleaner
        rows[name]["auc_loss"] = auc([-l for l, ok in zip(losses, clean) if ok],
                                     [-l for l, ok in zip(losses, clean) if not ok])
        print(name, rows[name], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"model": args.model, "examples": len(examples), **rows}, indent=2) + "\n"
    )

    print(f"\n{args.model}, {len(examples)} iso-dates examples, half with a wrong answer; "
          "AUC clean vs corrupted\n")
    print("| targets | layers | nuclear norm | effective rank | loss (baseline) |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['layers']} | {row['auc_nuclear_norm']:.3f} | "
              f"{row['auc_effective_rank']:.3f} | {row['auc_loss']:.3f} |")


if __name__ == "__main__":
    main()
