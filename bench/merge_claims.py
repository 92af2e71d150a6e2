"""Issue 12's claims on SmolLM2-135M: four rank-8 LoRA experts on four bundled tasks, merged by every
method, each merge scored on every expert's task (as a fraction of the expert's own score) and on
held-out text (perplexity: forgetting).

    OMP_NUM_THREADS=2 .venv/bin/python bench/merge_claims.py [--steps 100] [--eval-limit 50]
        [--only parity|errors]       # recompute one part of the saved results, rewrite the report

Experts: `rankwise finetune` with the demo's recipe (LoRA r 8, α 16, all linear layers, lr 1e-3, batch
8, warmup 5 %), STEPS steps each, seed 42; kept under bench/.cache/merge (reused when present). The four
tasks are those whose expert reaches a high score in 100 steps (unit-conversion and mental-math reached
only 0.36 and 0.54, and a merge's score as a fraction of a weak expert's says little).
Merges, all at weight 1 per expert: task-arithmetic (a sum), linear (the mean), ties and dare-ties and
dare-linear at density 0.5 (seed 0), svd at rank 8, cat, orthomerge G and C (task-arithmetic residuals,
λ = 0.2), rmm at k = 1, 2, 3, 4 (each task scored with its reverted adapter). Time and output size of
each merge are measured in the same process, and each merge's reconstruction error of every expert's
update, ‖ΔW_merge − ΔW_i‖_F / ‖ΔW_i‖_F over all adapted layers (RMM: task i's reverted adapter).

Parity with mergekit on the real model (linear, task_arithmetic, ties at density 0.5, weight 1 each):
each expert folded into a full model folder and merged by mergekit 0.1.5 and by rankwise, and the merged
linear weights compared; TIES entries tied at a trim cut-off are counted apart (which of them survive is
arbitrary). rankwise also merges straight from the adapter folders, without forming the experts' full
models; wall time and peak resident memory of each run are measured in its own subprocess.

Writes bench/results/merge_claims.json, merge_claims.md (table, claims) and merge_claims.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import rankwise  # noqa: E402
from rankwise.merging import merge_adapters, rmm  # noqa: E402
from rankwise.merging.evaluate import evaluate_merge, score_experts  # noqa: E402
from rankwise.models import load  # noqa: E402

TASKS = ["reverse-words", "spell-numbers", "name-format", "iso-dates"]
MERGES = {  # label -> (method, fields)
    "task-arithmetic": ("task-arithmetic", {}),
    "linear (mean)": ("linear", {}),
    "ties": ("ties", {"density": 0.5}),
    "dare-linear": ("dare-linear", {"density": 0.5}),
    "dare-ties": ("dare-ties", {"density": 0.5}),
    "svd (r 8)": ("svd", {"rank": 8}),
    "cat": ("cat", {}),
    "orthomerge G": ("orthomerge", {"variant": "G"}),
    "orthomerge C": ("orthomerge", {"variant": "C"}),
    **{f"rmm k={k}": ("rmm", {"rank": k}) for k in (1, 2, 3, 4)},
}


def train_experts(steps: int, cache: Path) -> list[dict]:
    experts = []
    for task in TASKS:
        out = cache / f"{task}-{steps}"
        if not (out / "results.json").is_file():
            rankwise.finetune({**json.loads((ROOT / "examples" / "demo.json").read_text()), "task": task,
                               "max_steps": steps, "eval_size": 50, "save_every": 0, "output_dir": str(out),
                               "progress": False})
        experts.append({"task": task, "adapter": str(out / "adapter"),
                        **json.loads((out / "results.json").read_text())})
        print(f"expert {task}: base {experts[-1]['base_exact_match']:.2f} -> "
              f"{experts[-1]['tuned_exact_match']:.2f}", flush=True)
    return experts


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_merge(label: str, method: str, fields: dict, experts: list[dict], scores: list[dict], scratch: Path,
              limit: int) -> dict:
    model, tokenizer = load("smollm2-135m")
    inputs = [e["adapter"] for e in experts]
    started = time.perf_counter()
    result = merge_adapters(model, inputs, method, **fields)
    seconds = time.perf_counter() - started
    out = scratch / label.replace(" ", "_")
    if result["kind"] == "adapter":
        rankwise.save_adapter(model, out, "merged")
    elif result["kind"] == "basis":
        rmm.save_basis(out, result.pop("basis"), result["inputs"], result["rank"])
    else:
        rankwise.save_model(model, out)

    def merged_for(index: int):
        if result["kind"] != "basis":
            return model
        reverted = load("smollm2-135m")[0]
        rmm.revert(reverted, out, index + 1)
        return reverted

    evaluation = evaluate_merge(scores, merged_for, load("smollm2-135m")[0], tokenizer, TASKS, limit,
                                progress=False)
    row = {"label": label, "method": method, "fields": fields, "kind": result["kind"], "seconds": seconds,
           "output_bytes": folder_bytes(out), **evaluation}
    ratios = [t["ratio"] for t in evaluation["tasks"] if t["ratio"] is not None]
    row["mean_ratio"] = sum(ratios) / len(ratios) if ratios else None
    print(f"{label:<16} mean ratio {row['mean_ratio']:.3f}, merged ppl "
          f"{evaluation['perplexity']['merged']}, {seconds:.2f} s", flush=True)
    return row


CHILD = """
import json, sys, time
from safetensors.torch import save_file
args = json.loads(sys.argv[1])
started = time.perf_counter()
if args["tool"] == "mergekit":
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge
    extra = {"density": 0.5} if args["method"] == "ties" else {}
    settings = {"merge_method": args["method"], "dtype": "float32",
                "models": [{"model": m, "parameters": {"weight": 1.0, **extra}} for m in args["models"]]}
    if args["method"] != "linear":  # mergekit's linear averages the listed models themselves, no base
        settings["base_model"] = args["base"]
    config = MergeConfiguration.model_validate(settings)
    run_merge(config, args["out"], MergeOptions(copy_tokenizer=False, quiet=True))
else:
    from rankwise.merging import merge_adapters
    from rankwise.models import load
    model, _ = load(args["base"], tokenizer=False)
    ours = {"task_arithmetic": "task-arithmetic"}.get(args["method"], args["method"])
    result = merge_adapters(model, args["models"], ours, **({"density": 0.5} if ours == "ties" else {}))
    if result["kind"] == "adapter":  # an exact low-rank result (linear, task arithmetic of LoRAs): fold it
        import rankwise
        rankwise.unload(model, merge=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k.endswith("proj.weight")},
              args["out"] + "/model.safetensors")
# VmHWM, not getrusage's ru_maxrss: Linux carries maxrss over fork and exec, so a child would report
# its parent's peak whenever that is larger
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mib": int(hwm.split()[1]) / 1024}))
"""
PARITY_METHODS = ("linear", "task_arithmetic", "ties")  # mergekit's names; dare is compared in expectation
# in tests/merging/test_mergekit_parity.py (its masks come from different random streams)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    found = {}
    for file in sorted(folder.glob("*.safetensors")):
        found.update({k: v for k, v in load_file(file).items() if k.endswith("proj.weight")})
    return found


def _tied_at_cutoff(deltas: list, density: float):
    """Entries whose magnitude equals the trim's k-th largest in some input: which of them survive the trim
    is arbitrary (mergekit leaves it to torch's unstable argsort, rankwise keeps the lower index)."""
    import torch

    tied = torch.zeros_like(deltas[0], dtype=torch.bool)
    for delta in deltas:
        magnitude = delta.abs()
        cutoff = magnitude.flatten().kthvalue(magnitude.numel() - int(density * magnitude.numel()) + 1).values
        tied |= magnitude == cutoff
    return tied


def mergekit_parity(experts: list[dict], cache: Path, scratch: Path) -> dict:
    """mergekit's and rankwise's merges of the same folded expert folders (weight parity), and rankwise's
    from the adapter folders (time and peak memory without forming the experts' full models)."""
    from rankwise.models.embedded import package_file
    from rankwise.models.gguf import ensure_converted

    base = ensure_converted(package_file("smollm2-135m"))
    folded = []
    for expert in experts:
        folder = cache / f"folded-{Path(expert['adapter']).parent.name}"
        if not (folder / "config.json").is_file():
            model = rankwise.load_adapter(load("smollm2-135m")[0], expert["adapter"])
            rankwise.unload(model, merge=True)
            model.save_pretrained(folder)
        folded.append(folder)
    base_weights = _weights(base)
    folded_deltas = [{k: v - base_weights[k] for k, v in _weights(f).items()} for f in folded]
    report = {}
    for method in PARITY_METHODS:
        runs = {}
        for label, tool, models in (("mergekit", "mergekit", folded), ("rankwise", "rankwise", folded),
                                    ("rankwise from adapters", "rankwise", [e["adapter"] for e in experts])):
            out = scratch / f"parity-{method}-{label.replace(' ', '-')}"
            out.mkdir(parents=True, exist_ok=True)
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(
                {"tool": tool, "method": method, "base": str(base), "models": [str(m) for m in models],
                 "out": str(out)})], capture_output=True, text=True, check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            runs[label] = {**json.loads(done.stdout.strip().splitlines()[-1]), "weights": _weights(out)}
        theirs, ours = runs["mergekit"].pop("weights"), runs["rankwise"].pop("weights")
        from_adapters = runs["rankwise from adapters"].pop("weights")
        worst = worst_untied = 0.0
        tied_entries = 0
        for key, weight in ours.items():
            gap = (weight - theirs[key]).abs()
            worst = max(worst, gap.max().item())
            if method == "ties":  # entries tied at the trim's cut-off may land on either side
                tied = _tied_at_cutoff([d[key] for d in folded_deltas], 0.5)
                tied_entries += int((gap > 1e-5).logical_and(tied).sum())
                gap = gap.masked_fill(tied, 0)
            worst_untied = max(worst_untied, gap.max().item())
        report[method] = {
            "max_abs_difference": worst, "max_abs_difference_off_ties": worst_untied,
            "entries_differing_at_tied_cutoff": tied_entries, "tensors_compared": len(ours),
            "from_adapters_max_abs_difference": max((from_adapters[k] - theirs[k]).abs().max().item()
                                                    for k in ours),
            **{label: run for label, run in runs.items()}}
        print(f"mergekit parity {method}: max |Δ| {worst:.2e} ({worst_untied:.2e} off tied cut-off entries, "
              f"{tied_entries} entries at ties); {runs}", flush=True)
    return report


def reconstruction_errors(experts: list[dict], scratch: Path) -> dict[str, list[float]]:
    """Per merge and task i: ‖ΔW_merge − ΔW_i‖ / ‖ΔW_i‖ over all adapted layers (Frobenius), ΔW_merge the
    update the merge gives task i (an RMM basis: task i's reverted adapter; any other merge: the one
    update it gives every task)."""
    from rankwise.adapters import layers_of
    from rankwise.merging.updates import read_update

    base = load("smollm2-135m")[0]
    targets = [read_update(base, e["adapter"], i) for i, e in enumerate(experts)]
    modules = dict(base.named_modules())
    weights = {p: modules[p].weight.detach().clone() for t in targets for p in t.paths}  # adapted layers only

    def error(update_of: dict, target) -> float:
        num = den = 0.0
        for path in target.paths:
            delta = target.delta(path)  # formed once per layer from the factors
            num += float((update_of[path] - delta).square().sum())
            den += float(delta.square().sum())
        return (num / den) ** 0.5

    found = {}
    for label, (method, fields) in MERGES.items():
        model = load("smollm2-135m")[0]
        result = merge_adapters(model, [e["adapter"] for e in experts], method, **fields)
        if result["kind"] == "basis":
            out = scratch / f"basis-{label.replace(' ', '_')}"
            rmm.save_basis(out, result.pop("basis"), result["inputs"], result["rank"])
            found[label] = []
            for index, target in enumerate(targets):
                reverted = load("smollm2-135m")[0]
                rmm.revert(reverted, out, index + 1)
                deltas = {p: a.delta_weight().detach() for p, a in layers_of(reverted, "reverted").items()}
                found[label].append(error(deltas, target))
        elif result["kind"] == "adapter":
            deltas = {p: a.delta_weight().detach() for p, a in layers_of(model, "merged").items()}
            found[label] = [error(deltas, t) for t in targets]
        else:
            modules = dict(model.named_modules())
            deltas = {p: modules[p].weight.detach() - weights[p] for t in targets for p in t.paths}
            found[label] = [error(deltas, t) for t in targets]
        print(f"{label:<16} relative error per task {[round(e, 3) for e in found[label]]}", flush=True)
        del model
    return found


def claims(saved: dict) -> list[dict]:
    rows, errors = saved["merges"], saved.get("reconstruction_errors")
    ta, ties, dare = rows["task-arithmetic"], rows["ties"], rows["dare-ties"]
    ortho = rows["orthomerge G"]
    ppl = {k: sum(r["perplexity"]["merged"]) / len(r["perplexity"]["merged"]) for k, r in rows.items()}
    singles = [k for k in rows if not k.startswith("rmm")]
    best_single = max(rows[k]["mean_ratio"] for k in singles)
    rmm_below = [rows[f"rmm k={k}"]["mean_ratio"] for k in (1, 2, 3)]
    found = [
        {"claim": "TIES beats plain task arithmetic at equal scaling (weight 1 each)",
         "held": ties["mean_ratio"] > ta["mean_ratio"],
         "evidence": f"mean ratio TIES {ties['mean_ratio']:.3f}, TA {ta['mean_ratio']:.3f}"},
        {"claim": "DARE beats plain task arithmetic at equal scaling (weight 1 each)",
         "held": dare["mean_ratio"] > ta["mean_ratio"],
         "evidence": f"mean ratio DARE-TIES {dare['mean_ratio']:.3f}, DARE-linear "
                     f"{rows['dare-linear']['mean_ratio']:.3f}, TA {ta['mean_ratio']:.3f}"},
        {"claim": "OrthoMerge forgets less than task arithmetic at the same per-task score",
         "held": ppl["orthomerge G"] < ppl["task-arithmetic"] and ortho["mean_ratio"] >= ta["mean_ratio"],
         "evidence": f"held-out perplexity OrthoMerge {ppl['orthomerge G']:.2f} vs TA "
                     f"{ppl['task-arithmetic']:.2f}; mean ratio {ortho['mean_ratio']:.3f} vs "
                     f"{ta['mean_ratio']:.3f}"},
        {"claim": "RMM with k < n scores higher per task than any single merged model; k = n is exact",
         "held": min(rmm_below) > best_single and rows["rmm k=4"]["mean_ratio"] >= 0.999,
         "evidence": f"RMM k=1..3 {[round(r, 3) for r in rmm_below]}, k=4 "
                     f"{rows['rmm k=4']['mean_ratio']:.3f}; best single merge {best_single:.3f}"},
    ]
    if errors:
        mean = {k: sum(v) / len(v) for k, v in errors.items()}
        best = min(mean[k] for k in singles)
        below = [mean[f"rmm k={k}"] for k in (1, 2, 3)]
        found.append({
            "claim": "RMM with k < n reconstructs each task's update with a lower error than any single "
                     "merge; k = n is exact",
            "held": all(errors[f"rmm k={k}"][i] < min(errors[s][i] for s in singles)
                        for k in (1, 2, 3) for i in range(len(TASKS))) and max(errors["rmm k=4"]) < 1e-5,
            "evidence": f"mean relative error RMM k=1..3 {[round(e, 3) for e in below]}, k=4 "
                        f"{mean['rmm k=4']:.1e}; best single merge {best:.3f}"})
    return found


def write_report(saved: dict, out: Path) -> None:
    """merge_claims.md and merge_claims.png, from what merge_claims.json holds."""
    rows, parity, errors = saved["merges"], saved["mergekit_parity"], saved.get("reconstruction_errors")
    saved["claims"] = claims(saved)
    (out / "merge_claims.json").write_text(json.dumps(saved, indent=1) + "\n")
    lines = ["| merge | kind | mean score / expert | " + " | ".join(TASKS) + " | held-out ppl | seconds | "
             "output MiB |" + (" reconstruction error (mean) |" if errors else ""),
             "|---" * (6 + len(TASKS) + bool(errors)) + "|"]
    for label, r in rows.items():
        scores = " | ".join(f"{t['merged']:.2f}/{t['expert']:.2f}" for t in r["tasks"])
        ppl = sum(r["perplexity"]["merged"]) / len(r["perplexity"]["merged"])
        error = f" {sum(errors[label]) / len(errors[label]):.3g} |" if errors else ""
        lines.append(f"| {label} | {r['kind']} | {r['mean_ratio']:.3f} | {scores} | {ppl:.2f} | "
                     f"{r['seconds']:.2f} | {r['output_bytes'] / 2**20:.1f} |{error}")
    base_ppl = next(iter(rows.values()))["perplexity"]["base"]
    marks = "\n".join(f"- {'held' if c['held'] else 'NOT held'}: {c['claim']} ({c['evidence']})"
                      for c in saved["claims"])
    parity_lines = ["| mergekit method | max abs diff, same folded inputs | off tied trim cut-offs | "
                    "entries at ties | from adapters: max abs diff | time rankwise (adapters) / mergekit | "
                    "peak memory rankwise (adapters) / mergekit |", "|---" * 7 + "|"]
    for method, p in parity.items():
        kit, ours = p["mergekit"], p["rankwise from adapters"]
        parity_lines.append(
            f"| {method} | {p['max_abs_difference']:.2e} | {p['max_abs_difference_off_ties']:.2e} | "
            f"{p['entries_differing_at_tied_cutoff']} | {p['from_adapters_max_abs_difference']:.2e} | "
            f"{ours['seconds'] / kit['seconds']:.2f} | {ours['peak_rss_mib'] / kit['peak_rss_mib']:.2f} |")
    (out / "merge_claims.md").write_text(
        f"# Merging four SmolLM2 LoRA experts\n\nbase held-out perplexity {base_ppl:.2f}; reconstruction "
        "error: ‖ΔW_merge − ΔW_i‖_F / ‖ΔW_i‖_F over all adapted layers, mean of the four experts\n\n"
        + "\n".join(lines) + f"\n\n{marks}\n\nParity with mergekit 0.1.5 (weight 1 each, ties density 0.5; "
        "peak memory: each run's own high-water resident size, VmHWM):\n\n" + "\n".join(parity_lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, r in rows.items():
        ppl = sum(r["perplexity"]["merged"]) / len(r["perplexity"]["merged"])
        ax.scatter(ppl, r["mean_ratio"])
        ax.annotate(label, (ppl, r["mean_ratio"]), fontsize=7)
    ax.axvline(base_ppl, color="gray", linestyle="--", linewidth=1, label="base model")
    ax.set(xlabel="held-out perplexity (lower: less forgetting)", ylabel="mean exact match / expert's",
           title="four SmolLM2 LoRA experts merged")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "merge_claims.png")
    print("\n".join(lines))
    print(marks)


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-limit", type=int, default=50)
    parser.add_argument("--experts-only", action="store_true", help="train (or find) the experts and stop")
    parser.add_argument("--only", choices=("parity", "errors"), help="recompute one part of the saved "
                        "results (mergekit parity, or reconstruction errors) and rewrite the report")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    cache = ROOT / "bench" / ".cache" / "merge"
    experts = train_experts(args.steps, cache)
    if args.experts_only:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    saved = json.loads((args.out / "merge_claims.json").read_text()) if args.only else {"experts": experts}
    with tempfile.TemporaryDirectory() as scratch:
        if args.only in (None, "parity"):
            saved["mergekit_parity"] = mergekit_parity(experts, cache, Path(scratch))
        if args.only is None:
            tokenizer = load("smollm2-135m")[1]
            scores = score_experts(
                lambda i: rankwise.load_adapter(load("smollm2-135m")[0], experts[i]["adapter"]), tokenizer,
                TASKS, args.eval_limit, progress=False)
            saved["merges"] = {label: run_merge(label, method, fields, experts, scores, Path(scratch),
                                                args.eval_limit)
                               for label, (method, fields) in MERGES.items()}
        if args.only in (None, "errors"):
            saved["reconstruction_errors"] = reconstruction_errors(experts, Path(scratch))
    write_report(saved, args.out)


if __name__ == "__main__":
    main()
