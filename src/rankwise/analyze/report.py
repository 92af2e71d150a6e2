"""`write_report`: report.json, PNG plots and a self-contained report.html (tables + relative <img>).

`result` is {"model": str, "weights": analyze_weights(...)} with the optional sections
"compare": {label: compare(...)}, "gradients": gradient_spectra(...) + "ranking", "heads":
head_composition(...) and "residual": residual_norms(...). Each section has one `_section_<name>`
function that draws its PNGs and returns its HTML. Every file is written to a temporary sibling and
renamed, so a failed run never leaves half a report.
"""

from __future__ import annotations

import html
from pathlib import Path
from statistics import fmean

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


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _short(label: str) -> str:
    """A legend label for a path: runs/r1/adapter -> r1/adapter."""
    return "/".join(Path(label).parts[-2:])


def _img(name: str) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(name)}">'


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:right}img{max-width:100%}")


def _plot_intruders(compared: dict, path: Path) -> None:
    """Intruder count and mean spectrum shift per layer type, one bar per fine-tune."""
    plt = _figure()
    labels = list(compared)
    types = list(next(iter(compared.values()))["by_type"])
    width = 0.8 / len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(types)), 3.2))
    for i, label in enumerate(labels):
        by_type = compared[label]["by_type"]
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(types))]
        axes[0].bar(xs, [by_type[t]["intruders"] for t in types], width, label=_short(label))
        axes[1].bar(xs, [by_type[t]["mean_spectrum_shift"] for t in types], width)
    cmp_ = next(iter(compared.values()))
    axes[0].set_title(f"intruders: top-{cmp_['k']} directions with max |cos| < {cmp_['threshold']}", fontsize=9)
    axes[1].set_title("mean spectrum shift ‖σ_ft − σ₀‖ / ‖σ₀‖", fontsize=9)
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xticks(range(len(types)), types, rotation=45)
    axes[0].legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def _section_weights(result: dict, out: Path) -> list[str]:
    layers, summary = result["weights"]["layers"], result["weights"]["summary"]
    _plot_spectra(layers, out / "spectra.png", "singular value spectra by layer type")
    _plot_alpha(layers, out / "alpha.png")
    return [f"<p>{summary['n_layers']} layers; mean α = {_fmt(summary['mean_alpha'])}; WeLore τ = "
            f"{summary['welore']['tau']:.4g} for {summary['welore']['reduction']:.0%} rank reduction.</p>",
            "<h2>By layer type</h2>",
            _table(["type", "layers", "mean α", "mean erank ratio", "mean stable rank", "WeLore LRC"],
                   [[t, v["layers"], v["alpha"], v["effective_rank_ratio"], v["stable_rank"], v["lrc"]]
                    for t, v in summary["by_type"].items()]),
            _img("spectra.png"), _img("alpha.png")]


def _section_compare(result: dict, out: Path) -> list[str]:
    compared = result["compare"]
    _plot_intruders(compared, out / "intruders.png")
    types = list(next(iter(compared.values()))["by_type"])
    cmp_ = next(iter(compared.values()))
    return ["<h2>Intruder dimensions</h2>",
            f"<p>Per fine-tune, how many of each layer's top-{cmp_['k']} singular directions have no base "
            f"direction with |cos| ≥ {cmp_['threshold']} (Shuttleworth et al.).</p>",
            _table(["fine-tune", "total", *types],
                   [[label, c["total_intruders"], *(c["by_type"][t]["intruders"] for t in types)]
                    for label, c in compared.items()]),
            _table(["fine-tune", "type", "layers", "mean spectrum shift", "mean min |cos|"],
                   [[label, t, v["layers"], v["mean_spectrum_shift"], v["mean_min_similarity"]]
                    for label, c in compared.items() for t, v in c["by_type"].items()]),
            _img("intruders.png")]


def _section_gradients(result: dict, out: Path) -> list[str]:
    data_sets = result["gradients"]
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
    _save(fig, out / "gradients.png")
    plt.close(fig)
    parts = ["<h2>Gradient spectra</h2>",
             "<p>Response-only loss, one example at a time. Higher-quality data has a lower nuclear norm and "
             "a higher effective rank (Li et al.); scores are higher for cleaner examples.</p>",
             _table(["data", "examples", "mean ‖G‖_*", "mean erank", "mean score"],
                    [[label, len(g["examples"]), fmean(g["mean"]["nuclear_norm"]), fmean(g["mean"]["effective_rank"]),
                      g["score"]] for label, g in sorted(data_sets.items(), key=lambda kv: -kv[1]["score"])]),
             _img("gradients.png")]
    for label, grads in data_sets.items():
        rows = grads["ranking"]
        shown = rows if len(rows) <= 20 else rows[:10] + rows[-10:]  # the best and the most suspect
        parts += [f"<h3>{html.escape(label)}: examples by {html.escape(grads['rank_by'])} score</h3>",
                  _table(["rank", "example", "score", "loss"],
                         [[rows.index(r) + 1, r["index"], r["score"], grads["examples"][r["index"]]["loss"]]
                          for r in shown])]
    return parts


def _section_heads(result: dict, out: Path) -> list[str]:
    heads = result["heads"]
    kinds = list(heads["scores"])
    n, h = heads["layers"], heads["heads"]
    plt = _figure()
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False, layout="constrained")
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
    _save(fig, out / "heads.png")
    plt.close(fig)
    return [f"<h2>Attention-head composition</h2><p>{n} layers × {h} heads; unrelated random heads score about "
            f"{heads['baseline']:.3f}.</p>", _img("heads.png"),
            _table(["kind", "sender", "receiver", "score", "top channel", "its share"],
                   [[t["kind"], f"L{t['sender'][0]}H{t['sender'][1]}", f"L{t['receiver'][0]}H{t['receiver'][1]}",
                     t["score"], t["channels"][0]["component"] if t["channels"] else "–",
                     t["channels"][0]["share"] if t["channels"] else "–"] for t in heads["top"]])]


def _section_residual(result: dict, out: Path) -> list[str]:
    res = result["residual"]
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    axes[0].plot(res["norm"], marker=".")
    axes[0].set_ylabel("mean ‖h_l‖")
    axes[1].plot(range(1, len(res["growth"]) + 1), res["growth"], marker=".")
    axes[1].axhline(1.0, color="grey", lw=0.6)
    axes[1].set_ylabel("‖h_l‖ / ‖h_(l−1)‖")
    for ax in axes:
        ax.set_xlabel("depth l (0 = embedding)")
    _save(fig, out / "residual.png")
    plt.close(fig)
    note = " The last state has the final norm applied." if res["final_norm_applied"] else ""
    return [f"<h2>Hidden-state norm by depth</h2><p>{res['tokens']} tokens, hidden size {res['hidden_size']}; "
            f"norm {res['norm'][0]:.3g} after the embedding, {max(res['norm']):.3g} at most.{note}</p>",
            _img("residual.png")]


def _section_layers(result: dict, out: Path) -> list[str]:
    layers = result["weights"]["layers"]
    return ["<h2>Layers</h2>",
            _table(["layer", "shape", "α", "xmin", "KS D", "erank", "stable rank", "WeLore"],
                   [[n, "×".join(map(str, l["shape"])), l["alpha"], l["xmin"], l["ks_distance"],
                     l["effective_rank"], l["stable_rank"], l["welore"]["label"]] for n, l in layers.items()])]


_SECTIONS = {"weights": _section_weights, "compare": _section_compare, "gradients": _section_gradients,
             "heads": _section_heads, "residual": _section_residual}


def write_report(result: dict, out_dir: str | Path) -> Path:
    """Write report.json, one or more PNGs per section present in `result`, and report.html into
    `out_dir`; returns the path of report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>rankwise analyze: {html.escape(str(result.get('model', '')))}</h1>"]
    for key, section in _SECTIONS.items():
        if key in result:
            parts += section(result, out)
    if "weights" in result:  # the long per-layer table goes last
        parts += _section_layers(result, out)
    write_json(out / "report.json", result)
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>rankwise analyze</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out / "report.html"
