"""The PNGs of `rankwise analyze`'s report: one plain function per figure, data in, file out.

Every figure is drawn with matplotlib's headless Agg backend and written atomically (temporary file,
then rename), like every other file rankwise writes.
"""

from __future__ import annotations

from pathlib import Path

from ..io.atomic import atomic_path

__all__ = ["plot_alpha", "plot_gradients", "plot_heads", "plot_intruders", "plot_residual", "plot_spectra"]


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed, same PNG everywhere
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def _short(label: str) -> str:
    """A legend label for a path: runs/r1/adapter -> r1/adapter."""
    return "/".join(Path(label).parts[-2:])


def plot_spectra(layers: dict, path: Path, title: str) -> None:
    """Normalised singular values σ_i/σ_1 vs i/rank, one panel per layer type, one line per layer."""
    plt = _figure()
    types = sorted({l["type"] for l in layers.values()})
    fig, axes = plt.subplots(1, len(types), figsize=(3.2 * len(types), 3), squeeze=False)
    for ax, t in zip(axes[0], types):
        for layer in (l for l in layers.values() if l["type"] == t):
            s = layer["singular_values"]
            if s and s[0] > 0:
                ax.plot([i / len(s) for i in range(len(s))], [v / s[0] for v in s], lw=0.8, alpha=0.6)
        ax.set_yscale("log")
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("i / rank")
    axes[0][0].set_ylabel("σ_i / σ_1")
    fig.suptitle(title, y=1.04)  # above the panel titles, not on top of them
    _save(fig, path)
    plt.close(fig)


def plot_alpha(layers: dict, path: Path) -> None:
    """Each layer's power-law α in model order, coloured by layer type."""
    plt = _figure()
    names = [n for n in layers if layers[n]["alpha"] is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.08 * len(names)), 3))
    types = sorted({layers[n]["type"] for n in names})
    for t in types:
        idx = [i for i, n in enumerate(names) if layers[n]["type"] == t]
        ax.scatter(idx, [layers[names[i]]["alpha"] for i in idx], s=12, label=t)
    ax.axhspan(2, 6, color="green", alpha=0.08, label="2 ≤ α ≤ 6")  # WeightWatcher's "well trained" band
    ax.set_xlabel("layer (model order)")
    ax.set_ylabel("power-law α")
    ax.legend(fontsize=7, ncol=4)
    _save(fig, path)
    plt.close(fig)


def plot_intruders(compared: dict, path: Path) -> None:
    """Intruder count and mean spectrum shift per layer type, one bar per fine-tune."""
    plt = _figure()
    labels = list(compared)
    first = compared[labels[0]]
    types = list(first["by_type"])
    width = 0.8 / len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(types)), 3.2))
    for i, label in enumerate(labels):
        by_type = compared[label]["by_type"]
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(types))]
        axes[0].bar(xs, [by_type[t]["intruders"] for t in types], width, label=_short(label))
        axes[1].bar(xs, [by_type[t]["mean_spectrum_shift"] for t in types], width)
    axes[0].set_title(f"intruders: top-{first['k']} directions with max |cos| < {first['threshold']}",
                      fontsize=9)
    axes[1].set_title("mean spectrum shift ‖σ_ft − σ₀‖ / ‖σ₀‖", fontsize=9)
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xticks(range(len(types)), types, rotation=45)
    axes[0].legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def plot_gradients(data_sets: dict, path: Path) -> None:
    """Per-layer mean gradient nuclear norm and effective rank, one line per data set."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    for label, grads in data_sets.items():
        for ax, key in zip(axes, ("nuclear_norm", "effective_rank")):
            ax.plot(grads["mean"][key], marker=".", lw=0.8, label=_short(label))
    axes[0].set_ylabel("‖G‖_* (mean over examples)")
    axes[1].set_ylabel("erank(G) (mean over examples)")
    axes[0].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("layer (model order)")
    axes[1].legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def plot_heads(heads: dict, path: Path) -> None:
    """Per kind, the strongest head-pair composition score for every (receiver, sender) layer pair."""
    kinds = list(heads["scores"])
    n, h = heads["layers"], heads["heads"]
    plt = _figure()
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False,
                             layout="constrained")
    for ax, kind in zip(axes[0], kinds):
        scores = heads["scores"][kind]
        # strongest head pair per (receiver layer, sender layer); blank where the sender is not earlier
        grid = [[max(scores[r][s] for r in range(l2 * h, (l2 + 1) * h) for s in range(l1 * h, (l1 + 1) * h))
                 if l1 < l2 else float("nan") for l1 in range(n)] for l2 in range(n)]
        image = ax.imshow(grid, origin="lower", cmap="viridis")
        ax.set_title(f"{kind}-composition (max over heads)", fontsize=9)
        ax.set_xlabel("sender layer")
        fig.colorbar(image, ax=ax, shrink=0.8)
    axes[0][0].set_ylabel("receiver layer")
    _save(fig, path)
    plt.close(fig)


def plot_residual(res: dict, path: Path, label: str = "model") -> None:
    """Hidden-state RMS by depth and its growth per layer, for the model and any `res["others"]` beside it."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    for name, one in {label: res, **res.get("others", {})}.items():
        axes[0].plot(one["rms"], marker=".", label=name)
        axes[1].plot(range(1, len(one["growth"]) + 1), one["growth"], marker=".", label=name)
    axes[0].set_ylabel("RMS of h_l")
    axes[1].axhline(1.0, color="grey", lw=0.6)
    if res.get("others"):
        axes[0].legend(fontsize=7)
    axes[1].set_ylabel("‖h_l‖ / ‖h_(l−1)‖")
    for ax in axes:
        ax.set_xlabel("depth l (0 = embedding)")
    _save(fig, path)
    plt.close(fig)
