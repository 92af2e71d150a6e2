"""Training-step and forward timings on the embedded SmolLM2-135M, reported as ratios within one run.

Anchors, all measured in the same process and interleaved round by round so that machine noise hits
every variant alike:
    base forward          the plain model, no adapter, under torch.no_grad()
    frozen-base step      forward + backward through the activations of the frozen model, no adapter:
                          the floor any adapter step sits on (the issue puts it at about 2x the forward)
    PEFT LoRA step        peft.get_peft_model with the same rank, alpha, targets
Measured:
    rankwise LoRA step    forward + backward + AdamW step
    merged forward        rankwise LoRA merged into the weights, under torch.no_grad()
Targets (issue 2): rankwise/PEFT step <= 1.0, rankwise step / base forward <= 2.1, merged / base <= 1.02.

    python bench/step_time.py [--rounds 15] [--batch 4] [--seq 128] [--out bench/results/step_time.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

import rankwise
from rankwise.models import load


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _train_step(model, optimizer, ids):
    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _frozen_step(model, ids):
    def step():
        model(input_ids=ids, labels=ids).loss.backward()

    return step


def _forward(model, ids):
    def run():
        with torch.no_grad():
            model(input_ids=ids)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--out", default="bench/results/step_time.json")
    args = parser.parse_args()
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base, _ = load(args.model)
    base.config.use_cache = False
    ids = torch.randint(0, base.config.vocab_size, (args.batch, args.seq))

    ours = rankwise.adapt(
        copy.deepcopy(base), "lora", rank=args.rank, alpha=2 * args.rank, targets="all-linear"
    )
    theirs = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear")
    )
    frozen = copy.deepcopy(base)
    frozen.requires_grad_(False)
    frozen.enable_input_require_grads()  # backward then runs through every activation, as with an adapter
    merged = rankwise.merge(rankwise.adapt(copy.deepcopy(base), "lora", rank=args.rank, targets="all-linear"))
    for model in (ours, theirs, frozen):
        model.train()
    for model in (base, merged):
        model.eval()

    variants = {
        "base_forward": _forward(base, ids),
        "merged_forward": _forward(merged, ids),
        "frozen_base_step": _frozen_step(frozen, ids),
        "rankwise_lora_step": _train_step(
            ours, torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], 1e-4), ids
        ),
        "peft_lora_step": _train_step(
            theirs, torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], 1e-4), ids
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.warmup + args.rounds):
        for name, fn in variants.items():
            elapsed = _timed(fn)
            if round_index >= args.warmup:
                times[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        "rankwise_lora_step / peft_lora_step": median["rankwise_lora_step"] / median["peft_lora_step"],
        "rankwise_lora_step / base_forward": median["rankwise_lora_step"] / median["base_forward"],
        "frozen_base_step / base_forward": median["frozen_base_step"] / median["base_forward"],
        "rankwise_lora_step / frozen_base_step": median["rankwise_lora_step"] / median["frozen_base_step"],
        "merged_forward / base_forward": median["merged_forward"] / median["base_forward"],
    }
    report = {
        "setup": vars(args) | {"threads": torch.get_num_threads(), "torch": torch.__version__},
        "median_seconds": median,
        "ratios": ratios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name, value in median.items():
        print(f"{name:>22}: {value * 1000:8.1f} ms (median of {args.rounds})")
    for name, value in ratios.items():
        print(f"{name:>40}: {value:.3f}")


if __name__ == "__main__":
    main()
