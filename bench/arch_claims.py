"""Issue 14's claims about residual-stream variants, at small scale.

    OMP_NUM_THREADS=2 .venv/bin/python bench/arch_claims.py [--only scratch|smollm2] [--steps 300]

From scratch (`rankwise pretrain --size tiny`, AdamW at 1e-3, the rate pretrain_claims found best for it;
300 steps of 16 × 256 bytes on the bundled corpus; seeds 0 and 1): the standard residual against Full
AttnRes, Block AttnRes with N = 2 and N = 4 blocks (the tiny model has 4 layers, so N = 4 is one layer
per block) and the ladder. Each run reports validation loss (log of the per-byte perplexity on the
held-out topics) and the trained model's hidden-state RMS by depth on a held-out text
(rankwise.analyze.residual_norms); "flatness" is max/min of that RMS over depth (1 = flat).

Converting SmolLM2 (the paper's "convert, then recover" path): the ladder on its upper 15 of 30 blocks.
Perplexity on 16 held-out blocks of 128 tokens of the bundled corpus and exact match on 40 held-out
iso-dates examples, for the unconverted and converted model, each before and after the same short
recovery: a rank-8 LoRA on every linear layer trained for RECOVERY_STEPS steps of language modelling on
the corpus's calibration split (batch 4 × 128 tokens, AdamW 1e-3). The unconverted model's LoRA run is
the control: what the same fine-tune does to a model that lost nothing.

Writes bench/results/arch_claims.{json,md} and arch_rms.png (RMS by depth of each variant, seed 0).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import rankwise  # noqa: E402
from rankwise import arch  # noqa: E402
from rankwise.analyze.residual import residual_norms  # noqa: E402
from rankwise.data import bundled_task  # noqa: E402
from rankwise.data.text import corpus_text, token_blocks  # noqa: E402
from rankwise.models import load  # noqa: E402
from rankwise.train.evaluate import exact_match, perplexity  # noqa: E402
from rankwise.train.pretrain import pretrain  # noqa: E402

VARIANTS = {"standard": None, "attnres-full": {}, "attnres-block N=2": {"blocks": 2},
            "attnres-block N=4": {"blocks": 4}, "ladder": {}}
SEEDS = [0, 1]
RECOVERY_STEPS = 40
HELD_OUT_TEXT = corpus_text("evaluation")[:2000]


def scratch(steps: int, runs: Path) -> dict:
    results = {}
    for label, fields in VARIANTS.items():
        variant = label.split(" ")[0]
        results[label] = []
        for seed in SEEDS:
            out = runs / f"{label.replace(' ', '_').replace('=', '')}-seed{seed}"
            done = out / "results.json"
            if not done.is_file():
                pretrain({"size": "tiny", "method": "adamw", "learning_rate": 1e-3, "max_steps": steps,
                          "seed": seed, "output_dir": str(out), "progress": False,
                          **({"arch": variant, "arch_config": fields} if fields is not None else {})})
            run = json.loads(done.read_text())
            model, tokenizer = load(str(out / "model"))
            rms = residual_norms(model, tokenizer, HELD_OUT_TEXT)["rms"]
            results[label].append({"seed": seed, "val_loss": math.log(run["val_perplexity"]),
                                   "val_perplexity": run["val_perplexity"], "rms": rms,
                                   "flatness": max(rms) / min(rms),
                                   "seconds_per_step": run["seconds_per_step"],
                                   "parameters": run["parameters"]})
            print(f"{label} seed {seed}: val loss {results[label][-1]['val_loss']:.4f}, flatness "
                  f"{results[label][-1]['flatness']:.2f}", flush=True)
    return results


def _recover(model, tokenizer) -> None:
    """RECOVERY_STEPS of language modelling on the calibration text with a rank-8 LoRA; merged after."""
    rankwise.adapt(model, "lora", rank=8, alpha=16, targets="all-linear")
    blocks = token_blocks(tokenizer, corpus_text("calibration"), 128)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(blocks), generator=generator)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(RECOVERY_STEPS):
        batch = blocks[order[(step * 4) % len(blocks):][:4]]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    rankwise.merge(model)


def smollm2() -> dict:
    _, tokenizer = load("smollm2-135m")
    held_out = token_blocks(tokenizer, corpus_text("evaluation"), 128, 16)
    examples = bundled_task("iso-dates")[1][:40]
    rows = {}
    for converted in (False, True):
        for recovered in (False, True):
            model, _ = load("smollm2-135m")
            if converted:
                arch.apply(model, "ladder", upper=15)
            started = time.perf_counter()
            if recovered:
                _recover(model, tokenizer)
            label = ("ladder (upper 15)" if converted else "unconverted") + (
                " + LoRA recovery" if recovered else "")
            rows[label] = {"perplexity": perplexity(model, held_out, progress=False),
                           "iso_dates_exact_match": exact_match(model, tokenizer, examples, progress=False,
                                                                max_new_tokens=16)["exact_match"],
                           "recovery_seconds": time.perf_counter() - started if recovered else 0.0}
            print(label, rows[label], flush=True)
    return rows


def _mean_spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {(max(values) - min(values)) / 2:.4f}"


def report(data: dict, out: Path) -> None:
    lines = ["# Residual-stream variants (issue 14)", "",
             f"Machine: {data['machine']}. Settings: {json.dumps(data['settings'])}.", ""]
    claims = []
    if "scratch" in data:
        runs = data["scratch"]
        lines += ["## From scratch, tiny Llama (4 layers, d 128), equal steps", "",
                  "| variant | val loss (mean ± half-range, 2 seeds) | val ppl / byte "
                  "| RMS flatness (max/min) | parameters |", "|---|---:|---:|---:|---:|"]
        for label, seeds in runs.items():
            lines.append(f"| {label} | {_mean_spread([r['val_loss'] for r in seeds])} | "
                         f"{statistics.mean(r['val_perplexity'] for r in seeds):.3f} | "
                         f"{statistics.mean(r['flatness'] for r in seeds):.2f} | "
                         f"{seeds[0]['parameters']:,} |")
        base_loss = [r["val_loss"] for r in runs["standard"]]
        noise = max(base_loss) - min(base_loss)
        base_flat = statistics.mean(r["flatness"] for r in runs["standard"])
        for label in ("attnres-full", "attnres-block N=2", "attnres-block N=4"):
            loss = statistics.mean(r["val_loss"] for r in runs[label])
            flat = statistics.mean(r["flatness"] for r in runs[label])
            held = loss <= statistics.mean(base_loss) and flat < base_flat
            claims.append(f"- {'held' if held else 'NOT held'}: {label} reaches validation loss at or below "
                          f"the standard residual with a flatter RMS (loss {loss:.4f} vs "
                          f"{statistics.mean(base_loss):.4f};"
                          f" flatness {flat:.2f} vs {base_flat:.2f})")
        ladder = statistics.mean(r["val_loss"] for r in runs["ladder"])
        gap = ladder - statistics.mean(base_loss)
        verdict = "held" if abs(gap) <= max(noise, 0.01) else "NOT held"
        claims.append(f"- {verdict}: the ladder from scratch is within seed noise of the standard model "
                      f"(loss gap {gap:+.4f}; the standard model's two "
                      f"seeds differ by {noise:.4f})")
    if "smollm2" in data:
        lines += ["", "## SmolLM2-135M, ladder on the upper 15 of 30 blocks, "
                  f"{RECOVERY_STEPS}-step LoRA recovery",
                  "", "| model | held-out perplexity | iso-dates exact match | recovery seconds |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['perplexity']:.2f} | {v['iso_dates_exact_match']:.3f} | "
                  f"{v['recovery_seconds']:.0f} |" for k, v in data["smollm2"].items()]
    lines += ["", "## Claims", "", *claims] if claims else []
    (out / "arch_claims.md").write_text("\n".join(lines) + "\n")
    if "scratch" in data:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, seeds in data["scratch"].items():
            ax.plot(seeds[0]["rms"], marker=".", label=label)
        ax.set_xlabel("depth (0 = first block's input)")
        ax.set_ylabel("hidden-state RMS")
        ax.set_title("trained tiny Llama, seed 0", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "arch_rms.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["scratch", "smollm2"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "arch_claims"))
    args = parser.parse_args()
    out = Path(args.out)
    path = out / "arch_claims.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["machine"] = f"{platform.machine()} {platform.processor()}, {torch.get_num_threads()} threads, " \
                      f"torch {torch.__version__}"
    data["settings"] = {"steps": args.steps, "seeds": SEEDS, "recovery_steps": RECOVERY_STEPS}
    if args.only in (None, "scratch"):
        data["scratch"] = scratch(args.steps, Path(args.runs))
    if args.only in (None, "smollm2"):
        data["smollm2"] = smollm2()
    path.write_text(json.dumps(data, indent=1))
    report(data, out)


if __name__ == "__main__":
    main()
