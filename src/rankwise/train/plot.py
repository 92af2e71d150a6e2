"""The loss curve of a run, drawn to PNG (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI, servers, ssh sessions
import matplotlib.pyplot as plt  # noqa: E402


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average, bias-corrected so the first points are not pulled towards 0."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def plot_loss(records: list[dict], path: str | Path, title: str = "training loss",
              metric: str = "exact_match", value: str = "loss") -> Path:
    """`value` per step (raw and smoothed; the loss by default, or e.g. a reward), the learning rate on a
    second axis when logged, `metric`'s eval points if logged."""
    path = Path(path)
    steps = [r["step"] for r in records]
    values = [r[value] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(steps, values, color="tab:blue", alpha=0.35, linewidth=1, label=value)
    if len(values) > 10:
        ax.plot(steps, smooth(values), color="tab:blue", linewidth=2, label=f"{value} (smoothed)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(value)
    ax.grid(alpha=0.3)
    if all("lr" in r for r in records):
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [r["lr"] for r in records], color="tab:gray", linestyle="--", linewidth=1,
                   label="learning rate")
        lr_ax.set_ylabel("learning rate")
    evals = [r for r in records if metric in r]
    if evals:
        label = metric.replace("_", " ")
        em_ax = ax.twinx()
        em_ax.spines["right"].set_position(("axes", 1.15))
        em_ax.plot([r["step"] for r in evals], [r[metric] for r in evals], "o-", color="tab:green",
                   label=label)
        em_ax.set_ylabel(label)
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
