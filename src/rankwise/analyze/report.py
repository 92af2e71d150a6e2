"""`write_report`: report.json, PNG plots and a self-contained report.html (tables + relative <img>).

`result` is {"model": str, "weights": analyze_weights(...)} with an optional "compare": compare(...).
Every file is written to a temporary sibling and renamed, so a failed run never leaves half a report.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..io.atomic import atomic_path, write_json

__all__ = ["write_report"]


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed, same PNG everywhere
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def _plot_spectra(layers: dict, path: Path, title: str) -> None:
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


def _plot_alpha(layers: dict, path: Path) -> None:
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


def _plot_intruders(by_type: dict, path: Path, k: int, threshold: float) -> None:
    plt = _figure()
    types = list(by_type)
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(types)), 3))
    ax.bar(types, [by_type[t]["intruders"] for t in types])
    ax.set_ylabel("intruder dimensions")
    ax.set_title(f"top-{k} directions with max |cos| < {threshold}", fontsize=9)
    ax.tick_params(axis="x", rotation=45)
    _save(fig, path)
    plt.close(fig)


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:right}img{max-width:100%}")


def _html(result: dict, images: list[str]) -> str:
    weights = result["weights"]
    layers, summary = weights["layers"], weights["summary"]
    parts = [f"<h1>rankwise analyze: {html.escape(str(result.get('model', '')))}</h1>",
             f"<p>{summary['n_layers']} layers; mean α = {_fmt(summary['mean_alpha'])}; WeLore τ = "
             f"{summary['welore']['tau']:.4g} for {summary['welore']['reduction']:.0%} rank reduction.</p>",
             "<h2>By layer type</h2>",
             _table(["type", "layers", "mean α", "mean erank ratio", "mean stable rank", "WeLore LRC"],
                    [[t, v["layers"], v["alpha"], v["effective_rank_ratio"], v["stable_rank"], v["lrc"]]
                     for t, v in summary["by_type"].items()])]
    if "compare" in result:
        cmp_ = result["compare"]
        parts += [f"<h2>Intruder dimensions vs {html.escape(str(result.get('tuned', '')))}</h2>",
                  f"<p>total {cmp_['total_intruders']} (k = {cmp_['k']}, ε = {cmp_['threshold']})</p>",
                  _table(["type", "layers", "intruders", "mean spectrum shift", "mean min |cos|"],
                         [[t, v["layers"], v["intruders"], v["mean_spectrum_shift"], v["mean_min_similarity"]]
                          for t, v in cmp_["by_type"].items()])]
    parts += [f'<h2>{html.escape(name)}</h2><img src="{html.escape(name)}" alt="{html.escape(name)}">'
              for name in images]
    parts += ["<h2>Layers</h2>",
              _table(["layer", "shape", "α", "xmin", "KS D", "erank", "stable rank", "WeLore"],
                     [[n, "×".join(map(str, l["shape"])), l["alpha"], l["xmin"], l["ks_distance"],
                       l["effective_rank"], l["stable_rank"], l["welore"]["label"]] for n, l in layers.items()])]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>rankwise analyze</title>'
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_report(result: dict, out_dir: str | Path) -> Path:
    """Write report.json, spectra.png, alpha.png (and intruders.png with a comparison) and report.html
    into `out_dir`; returns the path of report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = result["weights"]["layers"]
    images = ["spectra.png", "alpha.png"]
    _plot_spectra(layers, out / "spectra.png", "singular value spectra by layer type")
    _plot_alpha(layers, out / "alpha.png")
    if "compare" in result:
        images.append("intruders.png")
        cmp_ = result["compare"]
        _plot_intruders(cmp_["by_type"], out / "intruders.png", cmp_["k"], cmp_["threshold"])
    write_json(out / "report.json", result)
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(_html(result, images), encoding="utf-8")
    return out / "report.html"
