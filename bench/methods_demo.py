"""Every registered method on the demo task with the same budget: trainable parameters and held-out
exact match after the same number of steps, in one run.

    python bench/methods_demo.py [--steps 60] [--eval-size 50] [--methods lora dora ...]

All methods share examples/demo.json's settings (model, task, learning rate, batch, seed), except the
number of steps and the evaluation size given here; each method keeps its own default rank, alpha and
targets. A method that fails is recorded with its error rather than stopping the sweep. Results go to
bench/results/methods_demo.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import rankwise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/demo.json")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-size", type=int, default=50)
    parser.add_argument("--methods", nargs="*", default=rankwise.ADAPTERS.names())
    parser.add_argument("--out", default="bench/results/methods_demo.json")
    args = parser.parse_args()

    base = json.loads(Path(args.config).read_text())
    for shared in ("rank", "alpha", "dropout", "targets"):
        base.pop(shared, None)  # each method's own defaults
    base.update(max_steps=args.steps, eval_size=args.eval_size, save_every=0, progress=False)
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.is_file() else {}
    base_exact_match = None
    for method in args.methods:
        started = time.perf_counter()
        try:
            result = rankwise.finetune(dict(base, method=method, output_dir=f"runs/methods/{method}"))
            rows[method] = {
                "trainable_parameters": result["trainable_parameters"],
                "base_exact_match": result["base_exact_match"],
                "tuned_exact_match": result["tuned_exact_match"],
                "final_loss": result["final_loss"],
            }
            base_exact_match = result["base_exact_match"]
        except Exception as error:  # noqa: BLE001 -- a sweep records failures and goes on
            traceback.print_exc()
            rows[method] = {"error": f"{type(error).__name__}: {error}"}
        rows[method]["seconds"] = round(time.perf_counter() - started, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")
        print(method, rows[method], flush=True)

    print(f"\n{args.steps} steps each, held-out exact match on {args.eval_size} examples "
          f"(base model: {base_exact_match})\n")
    print("| method | trainable parameters | exact match | final loss |")
    print("|---|---:|---:|---:|")
    for method, row in sorted(rows.items()):
        if "error" in row:
            print(f"| {method} | – | failed: {row['error'][:60]} | – |")
        else:
            print(f"| {method} | {row['trainable_parameters']:,} | {row['tuned_exact_match']:.2f} | "
                  f"{row['final_loss']:.4f} |")


if __name__ == "__main__":
    main()
