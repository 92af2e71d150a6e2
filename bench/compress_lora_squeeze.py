"""LoRA-Squeeze (post-hoc): does a LoRA squeezed from rank 32 to rank 8 keep at least the held-out accuracy
of a LoRA trained at rank 8 for the same number of steps?

    python bench/compress_lora_squeeze.py                   # the full run (about 8-10 min on 2 CPU cores)
    python bench/compress_lora_squeeze.py --steps 2 --eval 4 --out /tmp/smoke.json   # a smoke test

Recipe: examples/demo.json (SmolLM2-135M, iso-dates, all linear layers, lr 1e-3, batch 8, warmup 5%, seed
42) run through rankwise.finetune twice, at rank 32 and at rank 8, with alpha = 2 · rank in both (the
demo's 16 / 8), so both start from the same update scale s = 2 and differ only in rank. The rank-32
adapter folder is then squeezed to rank 8 from its tensors alone
(rankwise.compress.lora_squeeze.squeeze_adapter_folder), loaded onto a fresh base model and scored on the
same held-out examples as the two trained adapters (exact match, greedy, as finetune scores them).

Steps: 40, chosen once and not tuned. The demo reaches 0.99 after 80 steps, so 80 would saturate the
task and any two adapters would tie; at 60 steps the method sweep (bench/results/methods_demo.json)
already had rank-8 LoRA at 0.87. Half the demo's budget keeps rank 8 clearly below the ceiling, so the
comparison can go either way. One seed, 100 held-out examples: differences of a few points are noise.
Results go to bench/results/compress_lora_squeeze.json (raw numbers, ratios, settings, seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import rankwise
from rankwise.compress.lora_squeeze import squeeze_adapter_folder
from rankwise.io import load_adapter
from rankwise.io.adapter_file import read_adapter
from rankwise.linalg.lowrank_product import product_svd
from rankwise.models import load
from rankwise.train import TrainConfig
from rankwise.train.evaluate import exact_match
from rankwise.train.run import split_examples


def energy_kept(adapter_dir: Path, rank: int) -> list[float]:
    """Per layer, the share of ‖s B A‖_F² in its top `rank` singular values: what the squeeze keeps."""
    saved = read_adapter(adapter_dir)
    scaling = rankwise.ADAPTERS.get(saved.method).scaling
    shares = []
    for path, config in saved.plan.items():
        values = product_svd(saved.state[f"{path}.lora_B"], saved.state[f"{path}.lora_A"],
                             scale=scaling(config)).S.double().square()
        shares.append(float(values[:rank].sum() / values.sum()))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/demo.json")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of each training run [40]")
    parser.add_argument("--eval", type=int, default=100, help="held-out examples scored [100]")
    parser.add_argument("--source-rank", type=int, default=32)
    parser.add_argument("--rank", type=int, default=8, help="trained-at and squeezed-to rank [8]")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", default="runs/compress_lora_squeeze", help="where adapters are written")
    parser.add_argument("--out", default="bench/results/compress_lora_squeeze.json")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    started = time.perf_counter()
    runs = Path(args.runs)
    base = json.loads(Path(args.config).read_text())
    base.update(max_steps=args.steps, eval_size=args.eval, save_every=0, seed=args.seed, method="lora")

    trained, seconds = {}, {}
    for rank in (args.source_rank, args.rank):
        tic = time.perf_counter()
        run = dict(base, rank=rank, alpha=2.0 * rank, output_dir=str(runs / f"r{rank}"))
        trained[rank] = rankwise.finetune(run)
        seconds[f"finetune_r{rank}"] = round(time.perf_counter() - tic, 1)
        print(f"rank {rank}: exact match {trained[rank]['tuned_exact_match']:.3f}", flush=True)

    tic = time.perf_counter()
    squeezed_dir = runs / f"r{args.source_rank}-squeezed-r{args.rank}"
    squeeze_adapter_folder(runs / f"r{args.source_rank}" / "adapter", squeezed_dir, args.rank)
    seconds["squeeze"] = round(time.perf_counter() - tic, 2)
    shares = energy_kept(runs / f"r{args.source_rank}" / "adapter", args.rank)
    squeezed_size = sum(t.numel() for t in read_adapter(squeezed_dir).state.values())

    tic = time.perf_counter()
    config = TrainConfig.from_dict(dict(base, output_dir=str(runs / "eval")))
    _, held_out = split_examples(config)  # the examples finetune scored
    model, tokenizer = load(config.model)
    load_adapter(model, squeezed_dir)
    squeezed = exact_match(model.eval(), tokenizer, held_out, max_new_tokens=config.max_new_tokens,
                           batch_size=config.eval_batch_size, progress=config.progress)["exact_match"]
    seconds["eval_squeezed"] = round(time.perf_counter() - tic, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)

    small, large = trained[args.rank]["tuned_exact_match"], trained[args.source_rank]["tuned_exact_match"]
    names = {rank: f"lora_r{rank}" for rank in trained}
    scores = {"base": trained[args.rank]["base_exact_match"],
              **{names[rank]: run["tuned_exact_match"] for rank, run in trained.items()},
              f"r{args.source_rank}_squeezed_to_r{args.rank}": squeezed}
    result = {
        "claim": f"A LoRA squeezed from rank {args.source_rank} to rank {args.rank} keeps at least the "
                 f"accuracy of a LoRA trained at rank {args.rank} for the same steps.",
        "holds": squeezed >= small,
        "exact_match": scores,
        "hits": {key: round(value * len(held_out)) for key, value in scores.items()},
        "ratios": {f"squeezed_over_trained_r{args.rank}": squeezed / small if small else None,
                   f"squeezed_over_r{args.source_rank}": squeezed / large if large else None},
        "adapter_parameters": {**{names[r]: trained[r]["trainable_parameters"] for r in trained},
                               "squeezed": squeezed_size},
        "final_loss": {names[r]: trained[r]["final_loss"] for r in trained},
        "energy_kept_by_squeeze": {"layers": len(shares), "median": statistics.median(shares),
                                   "min": min(shares), "mean": statistics.fmean(shares)},
        "settings": {"model": config.model, "task": config.task, "steps": args.steps,
                     "eval_examples": len(held_out), "seeds": [args.seed],
                     "learning_rate": config.learning_rate, "batch": config.per_device_train_batch_size,
                     "warmup_ratio": config.warmup_ratio, "targets": base.get("targets"),
                     "alpha": "2 x rank", "svd": "exact (svd_iters=0)",
                     "torch_threads": torch.get_num_threads()},
        "seconds": seconds,
        "command": " ".join(["python", *sys.argv]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("holds", "exact_match", "ratios", "seconds")}, indent=2))


if __name__ == "__main__":
    main()
