"""Mixed-adapter batches against running the adapters one after another, on the embedded SmolLM2-135M.

Setup: 4 LoRA adapters (rank 8, all-linear, B drawn at random so none is the identity), 32 rows of 64
tokens, 8 rows per adapter. Measured in one process, interleaved round by round (medians):
    mixed_forward             one forward of the 32 rows, each through its adapter (rows grouped a,a,..,b,..)
    mixed_forward_shuffled    the same with the rows interleaved (gathered and put back in every layer)
    sequential_forwards       four forwards of 8 rows, set_active before each (what routing replaces)
    full_batch_forwards       four forwards of all 32 rows, one per adapter, keeping each adapter's rows
    joint_train_step          one step of all 4 adapters on the mixed batch (loss = Σ row losses / 32)
    sequential_train_steps    four steps, each adapter alone on its 8 rows, same loss weighting
Targets (issue 13): sequential_forwards / mixed_forward >= 2; joint step faster than the sequential steps,
with the same final weights: both runs take plain SGD steps on the same rows, so after all rounds their
adapters are compared (max |difference|, reported).

    python bench/mixed_batch.py [--model smollm2-135m] [--rounds 10] [--out bench/results/mixed_batch.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import rankwise
from rankwise.adapters import layers_of, mixed_batch, set_active
from rankwise.models import load

NAMES = ["a", "b", "c", "d"]


def _adapted(base, rank: int, device: str):
    model = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(0)
    for name in NAMES:
        rankwise.adapt(model, "lora", name=name, rank=rank, alpha=2 * rank, targets="all-linear")
        with torch.no_grad():
            for adapter in layers_of(model, name).values():
                adapter.lora_B.copy_(0.02 * torch.randn(adapter.lora_B.shape, generator=gen))
    return model.to(device)


def _row_loss_sum(model, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1].float()
    return F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").mean(1).sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m, or tiny-llama for a smoke run")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows", type=int, default=8, help="rows per adapter")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="bench/results/mixed_batch.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    base, _ = load(args.model)
    base.config.use_cache = False
    infer = _adapted(base, args.rank, args.device).eval()
    joint = _adapted(base, args.rank, args.device).train()
    apart = copy.deepcopy(joint)  # the same A and B: adapt draws A from the global generator
    n = len(NAMES) * args.rows
    ids = torch.randint(0, base.config.vocab_size, (n, args.seq)).to(args.device)
    grouped = [name for name in NAMES for _ in range(args.rows)]
    shuffled = [NAMES[i % len(NAMES)] for i in range(n)]
    rows_of = {name: slice(i * args.rows, (i + 1) * args.rows) for i, name in enumerate(NAMES)}

    set_active(joint, NAMES)
    joint_opt = torch.optim.SGD([p for p in joint.parameters() if p.requires_grad], lr=args.lr)
    apart_opts = {}
    for name in NAMES:
        set_active(apart, name)
        apart_opts[name] = torch.optim.SGD([p for p in apart.parameters() if p.requires_grad], lr=args.lr)

    @torch.no_grad()
    def mixed(names):
        with mixed_batch(infer, names):
            infer(input_ids=ids)

    @torch.no_grad()
    def each(full: bool):
        for name in NAMES:
            set_active(infer, name)
            infer(input_ids=ids if full else ids[rows_of[name]])

    def joint_step():
        with mixed_batch(joint, grouped):
            (_row_loss_sum(joint, ids) / n).backward()
        joint_opt.step()
        joint_opt.zero_grad(set_to_none=True)

    def apart_steps():
        for name in NAMES:
            set_active(apart, name)
            (_row_loss_sum(apart, ids[rows_of[name]]) / n).backward()
            apart_opts[name].step()
            apart_opts[name].zero_grad(set_to_none=True)

    variants = {
        "mixed_forward": lambda: mixed(grouped),
        "mixed_forward_shuffled": lambda: mixed(shuffled),
        "sequential_forwards": lambda: each(full=False),
        "full_batch_forwards": lambda: each(full=True),
        "joint_train_step": joint_step,
        "sequential_train_steps": apart_steps,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.warmup + args.rounds):
        for name, fn in variants.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if round_index >= args.warmup:
                times[name].append(time.perf_counter() - start)

    weight_gap = max((a - b).abs().max().item() for name in NAMES
                     for x, y in zip(layers_of(joint, name).values(), layers_of(apart, name).values())
                     for a, b in zip(x.state_dict().values(), y.state_dict().values()))
    median = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        "sequential_forwards / mixed_forward": median["sequential_forwards"] / median["mixed_forward"],
        "sequential_forwards / mixed_forward_shuffled":
            median["sequential_forwards"] / median["mixed_forward_shuffled"],
        "full_batch_forwards / mixed_forward": median["full_batch_forwards"] / median["mixed_forward"],
        "sequential_train_steps / joint_train_step":
            median["sequential_train_steps"] / median["joint_train_step"],
    }
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    report = {
        "setup": vars(args) | {"threads": torch.get_num_threads(), "torch": torch.__version__,
                               "machine": device or platform.machine()},
        "median_seconds": median,
        "ratios": ratios,
        "max_weight_difference_joint_vs_sequential": weight_gap,
        "targets": {"mixed >= 2x sequential": ratios["sequential_forwards / mixed_forward"] >= 2,
                    "joint training faster": ratios["sequential_train_steps / joint_train_step"] > 1,
                    "same final weights (<= 1e-5)": weight_gap <= 1e-5},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name, value in median.items():
        print(f"{name:>24}: {value * 1000:9.1f} ms (median of {args.rounds})")
    for name, value in ratios.items():
        print(f"{name:>46}: {value:.3f}")
    steps = args.warmup + args.rounds
    print(f"max |joint - sequential| adapter weight after {steps} SGD steps: {weight_gap:.2e}")


if __name__ == "__main__":
    main()
