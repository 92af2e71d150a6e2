"""QLoRA on the demo task: peak training memory and held-out exact match of a LoRA on a 4-bit RTN base
against the same LoRA on the fp32 base, after the same short training; then the 4-bit LoRA merged into
its 4-bit base (dequantize, merge, requantize) and the error that the requantization added.

    OMP_NUM_THREADS=1 python bench/qlora_memory.py [--steps 30] [--eval-size 40]

Settings: examples/demo.json (SmolLM2-135M, LoRA rank 8, alpha 16, dropout 0, all-linear, iso-dates,
max_length 96, lr 1e-3, warmup 5%, batch 8, seed 42), but --steps steps instead of 80 and --eval-size
held-out examples instead of 100, the same for both runs: about 6 minutes of CPU time on one thread (11
minutes of wall time on a shared 2-core machine). The 4-bit run adds quantize_bits=4 and
quantize_group_size=64 (rankwise's RTN on every block linear layer; the embeddings and the tied lm_head
stay fp32).
Memory of one optimizer step on 8 demo examples, in MiB: resident = the bytes of every parameter and
buffer before it (mostly the weights); step peak = the most that tensors allocated inside the first step
held at once (activations, gradients, AdamW's state, a rebuilt dense weight), from the profiler
(rankwise.train.probe.peak_allocated_mb); peak = resident + step peak.
Caveat: SmolLM2 ships as a Q4_1 GGUF (4 bits, blocks of 32, a float scale and minimum each), so its "fp32"
block weights already lie on a 4-bit grid: the baseline is itself a 4-bit model dequantized, and the 4-bit
run quantizes it a second time. RTN's integer zero point does not fall on Q4_1's float minimum, so even
with groups of 32 RTN moves these weights about as much as it would move full-precision ones; the script
measures that error (groups of 32 and 64) so the accuracy gap can be read with it.
Writes bench/results/qlora_memory.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import rankwise
from rankwise.adapters import requantization_errors
from rankwise.data import bundled_task, collate, encode_example
from rankwise.io import write_json
from rankwise.models import load
from rankwise.train import finetune, quantize_base
from rankwise.train.evaluate import exact_match
from rankwise.train.probe import peak_allocated_mb

OUT = Path("bench/results")


def resident_mb(model: torch.nn.Module) -> float:
    tensors = {t.data_ptr(): t for t in (*model.parameters(), *model.buffers())}  # tied weights once
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20


def step_memory(demo: dict, bits: int | None) -> dict:
    """Resident and step-peak MiB of one AdamW step of the demo's LoRA on a fresh model."""
    torch.manual_seed(demo["seed"])
    model, tokenizer = load(demo["model"])
    if bits:
        quantize_base(model, bits, 64)
    rankwise.adapt(model, "lora", rank=demo["rank"], alpha=demo["alpha"], dropout=demo["dropout"],
                   targets=demo["targets"])
    train_rows, _ = bundled_task(demo["task"])
    batch = collate([encode_example(tokenizer, row, demo["max_length"]) for row in train_rows[:8]],
                    tokenizer.pad_token_id)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=demo["learning_rate"])
    model.train()

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    resident = resident_mb(model)
    step_peak = peak_allocated_mb(step)
    return {"resident_mb": resident, "step_peak_mb": step_peak, "peak_mb": resident + step_peak}


def rtn_error_on_smollm2(group_size: int) -> float:
    """Median over SmolLM2's block linear layers of ‖Q(W) − W‖_F / ‖W‖_F at 4 bits."""
    model, _ = load("smollm2-135m", tokenizer=False)
    original = {path: m.weight.detach().clone() for path, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and path != "lm_head"}
    quantize_base(model, 4, group_size)
    errors = [(model.get_submodule(path).weight - weight).norm() / weight.norm()
              for path, weight in original.items()]
    return statistics.median(e.item() for e in errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-size", type=int, default=40)
    parser.add_argument("--config", default="examples/demo.json")
    args = parser.parse_args()
    started = time.perf_counter()
    demo = json.loads(Path(args.config).read_text())
    runs = {}
    for label, bits in (("fp32", None), ("rtn4", 4)):
        memory = step_memory(demo, bits)
        settings = {**demo, "max_steps": args.steps, "eval_size": args.eval_size, "save_every": 0,
                    "progress": False, "output_dir": f"runs/qlora_memory/{label}"}
        if bits:
            settings.update(quantize_bits=bits, quantize_group_size=64)
        result = finetune(settings)
        runs[label] = {**memory, "base_exact_match": result["base_exact_match"],
                       "tuned_exact_match": result["tuned_exact_match"], "final_loss": result["final_loss"]}
        print(label, runs[label], flush=True)
    # The 4-bit adapter merged into its 4-bit base: what the requantization costs.
    model, tokenizer = load(demo["model"])
    quantize_base(model, 4, 64)
    rankwise.load_adapter(model, "runs/qlora_memory/rtn4/adapter")
    rankwise.merge(model)
    errors = requantization_errors(model).values()
    delta = [e["relative_to_delta"] for e in errors]
    weight = [e["relative_to_weight"] for e in errors]
    test = bundled_task(demo["task"])[1][: args.eval_size]
    merged = exact_match(model, tokenizer, test, max_new_tokens=demo["max_new_tokens"], progress=False)
    result = {
        "settings": {"config": args.config, "steps": args.steps, "eval_size": args.eval_size,
                     "quantize_group_size": 64, "threads": torch.get_num_threads(),
                     "machine": platform.platform(), "torch": torch.__version__},
        "runs": runs, "memory_ratio": runs["rtn4"]["peak_mb"] / runs["fp32"]["peak_mb"],
        "resident_ratio": runs["rtn4"]["resident_mb"] / runs["fp32"]["resident_mb"],
        "merged_into_4bit": {
            "exact_match": merged["exact_match"], "layers": len(delta),
            "relative_to_delta_median": statistics.median(delta), "relative_to_delta_max": max(delta),
            "relative_to_weight_median": statistics.median(weight), "relative_to_weight_max": max(weight)},
        "rtn4_error_on_smollm2": {"group_32": rtn_error_on_smollm2(32), "group_64": rtn_error_on_smollm2(64)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(OUT / "qlora_memory.json", result)
    (OUT / "qlora_memory.md").write_text(report(result), encoding="utf-8")
    print(report(result))


def report(r: dict) -> str:
    s, runs, m, q = r["settings"], r["runs"], r["merged_into_4bit"], r["rtn4_error_on_smollm2"]
    rows = "\n".join(
        f"| {label} | {x['resident_mb']:.0f} | {x['step_peak_mb']:.0f} | {x['peak_mb']:.0f} | "
        f"{x['base_exact_match']:.2f} | {x['tuned_exact_match']:.2f} | {x['final_loss']:.3f} |"
        for label, x in (("fp32 base + LoRA", runs["fp32"]), ("4-bit RTN base + LoRA", runs["rtn4"])))
    return f"""# QLoRA: a LoRA on a 4-bit base against one on the fp32 base (SmolLM2-135M, iso-dates)

{s['config']} settings, {s['steps']} steps (the demo runs 80), exact match on {s['eval_size']} held-out
examples; 4-bit = rankwise RTN, groups of {s['quantize_group_size']}, every block linear layer.
torch {s['torch']}, {s['threads']} thread(s), {r['seconds']:.0f} s in all.

| run | resident MiB | step peak MiB | peak MiB | base exact match | tuned exact match | final loss |
|---|---|---|---|---|---|---|
{rows}

Peak memory of the 4-bit run: {r['memory_ratio']:.2f} × the fp32 run's (the resident weights:
{r['resident_ratio']:.2f} ×; the rest of the peak is activations, the vocab-sized logits and their
gradients, the same in both runs).

Merging the 4-bit run's adapter into its 4-bit base (dequantize, merge, requantize), over
{m['layers']} layers: ‖Q(W+ΔW) − (W+ΔW)‖_F is a median {m['relative_to_delta_median']:.2f}
(max {m['relative_to_delta_max']:.2f}) of ‖ΔW‖_F and {m['relative_to_weight_median']:.4f}
(max {m['relative_to_weight_max']:.4f}) of ‖W+ΔW‖_F; the merged 4-bit model's exact match is
{m['exact_match']:.2f}.

Caveat: SmolLM2 ships as a Q4_1 GGUF (blocks of 32, a float scale and minimum each), so the "fp32"
baseline is itself a dequantized 4-bit model and the 4-bit run quantizes it a second time. RTN's integer
zero point does not land on Q4_1's grid: 4-bit RTN moves the block weights by a median
{q['group_32']:.4f} of ‖W‖_F with groups of 32 and {q['group_64']:.4f} with groups of 64 (the setting above).
"""


if __name__ == "__main__":
    main()
