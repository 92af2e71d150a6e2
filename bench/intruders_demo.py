"""Intruder dimensions on the demo task: LoRA rank 1 and rank 8 vs full fine-tuning, same steps.

    python bench/intruders_demo.py [--steps 80] [--lr-scale 1] [--out runs/intruders]

Reproduces the check of "LoRA vs Full Fine-tuning: An Illusion of Equivalence" (Shuttleworth et al.)
on SmolLM2-135M and the bundled iso-dates task: three fine-tunes of every linear layer through the same
loop, data, batches and schedule (examples/demo.json), differing only in the parameterisation and the
learning rate. The learning rates keep the paper's ratios (r=1 : r=8 : full = 3e-4 : 1.5e-4 : 1e-5),
scaled so that rank 8 uses the demo's 1e-3 (times --lr-scale). Then `rankwise analyze` compares each
fine-tune with the base (k = 10, ε = 0.5, the paper's defaults) into one report, and this script also
counts intruders at ε ∈ {0.3, 0.5, 0.7} from the stored similarities. A finished run (results.json
present) is reused.

Results: <out>/report/ (report.html, intruders.png, report.json) and bench/results/intruders_demo.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import rankwise
from rankwise.cli.main import main as cli

RUNS = {  # name: (method, rank, alpha, learning rate); full fine-tuning has no rank, alpha or dropout
    "lora-r1": ("lora", 1, 2, 2e-3),
    "lora-r8": ("lora", 8, 16, 1e-3),
    "full": ("full", None, None, 1e-3 / 15),
}
THRESHOLDS = (0.3, 0.5, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/demo.json")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--eval-size", type=int, default=100)
    parser.add_argument("--lr-scale", type=float, default=1.0, help="multiplies every run's learning rate")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--out", default="runs/intruders")
    parser.add_argument("--results", default="bench/results/intruders_demo.json")
    args = parser.parse_args()

    base = json.loads(Path(args.config).read_text())
    base.update(max_steps=args.steps, eval_size=args.eval_size, save_every=0)
    out = Path(args.out)
    rows = {}
    runs = {name: RUNS[name] for name in args.runs}
    for name, (method, rank, alpha, lr) in runs.items():
        lr *= args.lr_scale
        run_dir = out / name
        if not (run_dir / "results.json").is_file():
            started = time.perf_counter()
            low_rank = {"rank": rank, "alpha": alpha, "dropout": base.get("dropout") if rank else None}
            rankwise.finetune(dict(base, method=method, **low_rank, learning_rate=lr,
                                   output_dir=str(run_dir)))
            print(f"{name}: trained in {time.perf_counter() - started:.0f} s", flush=True)
        trained = json.loads((run_dir / "results.json").read_text())
        rows[name] = {"method": method, "rank": rank, "alpha": alpha, "learning_rate": lr,
                      "steps": args.steps, "tuned_exact_match": trained["tuned_exact_match"],
                      "base_exact_match": trained["base_exact_match"]}

    report = out / "report"
    started = time.perf_counter()
    code = cli(["analyze", base["model"], "--out", str(report), "--compare",
                *[str(out / name / "adapter") for name in runs]])
    if code != 0:
        raise SystemExit(f"rankwise analyze failed with exit code {code}")
    print(f"analysis in {time.perf_counter() - started:.0f} s", flush=True)
    compared = json.loads((report / "report.json").read_text())["compare"]
    for name in runs:
        cmp_ = compared[str(out / name / "adapter")]  # report.json sorts its keys: look runs up by path
        sims = [s for layer in cmp_["layers"].values() for s in layer["similarities"]]
        rows[name]["intruders"] = {str(eps): sum(s < eps for s in sims) for eps in THRESHOLDS}
        rows[name]["intruders_by_type"] = {t: v["intruders"] for t, v in cmp_["by_type"].items()}
        rows[name]["min_similarity"] = min(sims)
        rows[name]["mean_spectrum_shift"] = sum(v["mean_spectrum_shift"] * v["layers"] for v in
                                                cmp_["by_type"].values()) / len(cmp_["layers"])
    results = Path(args.results)
    saved = json.loads(results.read_text()) if results.is_file() else {}
    saved[f"lr-scale {args.lr_scale:g}"] = rows  # one entry per learning-rate setting
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(saved, indent=2) + "\n")

    print(f"\n{args.steps} steps each; intruder dimensions among the top-10 directions of "
          f"{len(next(iter(compared.values()))['layers'])} matrices\n")
    print("| run | lr | exact match | min similarity | "
          + " | ".join(f"intruders ε={eps}" for eps in THRESHOLDS) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(THRESHOLDS))
    for name, row in rows.items():
        counts = " | ".join(str(row["intruders"][str(eps)]) for eps in THRESHOLDS)
        print(f"| {name} | {row['learning_rate']:.2g} | {row['tuned_exact_match']:.2f} | "
              f"{row['min_similarity']:.3f} | {counts} |")
    print(f"\nreport: {report / 'report.html'}")


if __name__ == "__main__":
    main()
