"""TRP's claim on a small scale: its final decomposition (no retraining) loses less accuracy than
decomposing a normally trained model at the same rank.

Setup: scikit-learn's bundled digits (8x8 images, 10 classes; a fixed stratified 70/30 split, features
standardized on the training part), an MLP 64-128-128-10 (ReLU). For each seed, two models from the same
initialization train for the same epochs with the same batches (SGD, lr 0.1, momentum 0.9, weight decay
1e-4, the TRP code's optimizer): the baseline, and TRP (rankwise.compress.trp.TrainedRankPruning on fc1 and
fc2 with the code's defaults: energy 0.9, nuclear weight 3e-4, here period 5). The output layer is not
decomposed, as in the paper's tables. Then both models are decomposed by truncated SVD at the SAME rank
per layer, the TRP model's energy rank (e = 0.9), and test accuracy is measured before and after.
Also reported: the TRP model decomposed at the code's value threshold (σ >= 5e-2), and both models at a
few shared fixed ranks.

    OMP_NUM_THREADS=1 python bench/compress_trp.py [--seeds 0 1 2] [--epochs 30]
        [--out bench/results/compress_trp.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import rankwise
from rankwise.compress.trp import TrainedRankPruning
from rankwise.linalg.rank_selection import energy_rank

LAYERS = ("fc1", "fc2")
FIXED_RANKS = (4, 8, 16)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def digits() -> tuple[torch.Tensor, ...]:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return as_x(x_train), torch.tensor(y_train), as_x(x_test), torch.tensor(y_test)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def train(seed: int, trp: bool, data, epochs: int, batch: int = 64) -> MLP:
    x, y = data[0], data[1]
    torch.manual_seed(seed)
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    pruning = TrainedRankPruning(model, targets=list(LAYERS), energy=0.9, nuclear_weight=3e-4,
                                 period=5) if trp else None
    order = torch.Generator().manual_seed(seed)  # the same batches for both models
    step = 0
    for _ in range(epochs):
        for rows in torch.randperm(len(x), generator=order).split(batch):
            nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            if pruning:
                pruning.after_backward(step)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if pruning:
                pruning.after_step(step)
    return model


def decomposed(model: MLP, **fields) -> MLP:
    copy = MLP()
    copy.load_state_dict(model.state_dict())
    return rankwise.compress(copy, "trp", targets=list(LAYERS), **fields)


def energy_ranks(model: MLP, energy: float = 0.9) -> dict[str, int]:
    return {name: energy_rank(torch.linalg.svdvals(getattr(model, name).weight.detach()), energy)
            for name in LAYERS}


def run_seed(seed: int, data, epochs: int) -> dict:
    x_test, y_test = data[2], data[3]
    models = {"baseline": train(seed, False, data, epochs), "trp": train(seed, True, data, epochs)}
    ranks = energy_ranks(models["trp"])
    out = {"seed": seed, "shared_ranks": ranks,
           "energy_ranks_0.9": {kind: energy_ranks(model) for kind, model in models.items()}}
    for kind, model in models.items():
        before = accuracy(model, x_test, y_test)
        after = accuracy(decomposed(model, rank_pattern=ranks), x_test, y_test)
        out[kind] = {"accuracy": before, "decomposed_accuracy": after, "drop": before - after,
                     "at_fixed_ranks": {r: accuracy(decomposed(model, rank=r), x_test, y_test)
                                        for r in FIXED_RANKS}}
    at_threshold = decomposed(models["trp"], threshold=5e-2)
    out["trp"]["value_threshold_5e-2"] = {
        "ranks": {name: getattr(at_threshold, name).rank for name in LAYERS},
        "accuracy": accuracy(at_threshold, x_test, y_test)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="bench/results/compress_trp.json")
    args = parser.parse_args()
    data = digits()
    runs = [run_seed(seed, data, args.epochs) for seed in args.seeds]
    mean = {kind: {key: statistics.fmean(run[kind][key] for run in runs)
                   for key in ("accuracy", "decomposed_accuracy", "drop")} for kind in ("baseline", "trp")}
    base_drop, trp_drop = mean["baseline"]["drop"], mean["trp"]["drop"]
    summary = {
        "mean": mean,
        "drop_ratio_trp_over_baseline": trp_drop / base_drop if base_drop > 0 else None,
        "claim_holds": trp_drop < base_drop,
        "claim_holds_per_seed": [run["trp"]["drop"] < run["baseline"]["drop"] for run in runs],
    }
    result = {"setup": {"data": "sklearn digits, stratified 70/30 split (random_state 0)",
                        "model": "MLP 64-128-128-10", "epochs": args.epochs, "seeds": args.seeds,
                        "decomposed": list(LAYERS),
                        "trp": {"energy": 0.9, "nuclear_weight": 3e-4, "period": 5},
                        "optimizer": "SGD lr 0.1 momentum 0.9 wd 1e-4, batch 64",
                        "threads": torch.get_num_threads(), "torch": torch.__version__},
              "summary": summary, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for run in runs:
        print(f"seed {run['seed']}: ranks {run['shared_ranks']}  "
              + "  ".join(f"{kind} {run[kind]['accuracy']:.4f} -> {run[kind]['decomposed_accuracy']:.4f}"
                          for kind in ("baseline", "trp")))


if __name__ == "__main__":
    main()
