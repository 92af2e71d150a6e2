"""`write_report`: report.json, PNG plots and a self-contained report.html (tables + relative <img>).

`result` is {"model": str, "weights": analyze_weights(...)} with the optional sections
"compare": {label: compare(...)}, "gradients": {label: gradient_spectra(...) + "ranking", "rank_by",
"score"}, "heads": head_composition(...) and "residual": residual_norms(...). Each section has one
`_section_<name>` function that draws its PNGs (plots.py) and returns its HTML. Every file is written
to a temporary sibling and renamed, so a failed run never leaves half a report.
"""

from __future__ import annotations

import html
from pathlib import Path
from statistics import fmean

from ..io.atomic import atomic_path, write_json
from .plots import plot_alpha, plot_gradients, plot_heads, plot_intruders, plot_residual, plot_spectra

__all__ = ["write_report"]


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(name)}">'


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}"
          "table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:right}img{max-width:100%}")


def _section_weights(result: dict, out: Path) -> list[str]:
    layers, summary = result["weights"]["layers"], result["weights"]["summary"]
    plot_spectra(layers, out / "spectra.png", "singular value spectra by layer type")
    plot_alpha(layers, out / "alpha.png")
    return [f"<p>{summary['n_layers']} layers; mean α = {_fmt(summary['mean_alpha'])}; WeLore τ = "
            f"{summary['welore']['tau']:.4g} for {summary['welore']['reduction']:.0%} rank reduction.</p>",
            "<h2>By layer type</h2>",
            _table(["type", "layers", "mean α", "mean erank ratio", "mean stable rank", "WeLore LRC"],
                   [[t, v["layers"], v["alpha"], v["effective_rank_ratio"], v["stable_rank"], v["lrc"]]
                    for t, v in summary["by_type"].items()]),
            _img("spectra.png"), _img("alpha.png")]


def _section_compare(result: dict, out: Path) -> list[str]:
    compared = result["compare"]
    plot_intruders(compared, out / "intruders.png")
    first = next(iter(compared.values()))
    types = list(first["by_type"])
    return ["<h2>Intruder dimensions</h2>",
            f"<p>Per fine-tune, how many of each layer's top-{first['k']} singular directions have no base "
            f"direction with |cos| ≥ {first['threshold']} (Shuttleworth et al.).</p>",
            _table(["fine-tune", "total", *types],
                   [[label, c["total_intruders"], *(c["by_type"][t]["intruders"] for t in types)]
                    for label, c in compared.items()]),
            _table(["fine-tune", "type", "layers", "mean spectrum shift", "mean min |cos|"],
                   [[label, t, v["layers"], v["mean_spectrum_shift"], v["mean_min_similarity"]]
                    for label, c in compared.items() for t, v in c["by_type"].items()]),
            _img("intruders.png")]


def _section_gradients(result: dict, out: Path) -> list[str]:
    data_sets = result["gradients"]
    plot_gradients(data_sets, out / "gradients.png")
    parts = ["<h2>Gradient spectra</h2>",
             "<p>Response-only loss, one example at a time. Higher-quality data has a lower nuclear norm and "
             "a higher effective rank (Li et al.); scores are higher for cleaner examples.</p>",
             _table(["data", "examples", "mean ‖G‖_*", "mean erank", "mean score"],
                    [[label, len(g["examples"]), fmean(g["mean"]["nuclear_norm"]),
                      fmean(g["mean"]["effective_rank"]), g["score"]]
                     for label, g in sorted(data_sets.items(), key=lambda kv: -kv[1]["score"])]),
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
    n, h = heads["layers"], heads["heads"]
    plot_heads(heads, out / "heads.png")
    return [f"<h2>Attention-head composition</h2><p>{n} layers × {h} heads; "
            f"unrelated random heads score about {heads['baseline']:.3f}.</p>", _img("heads.png"),
            _table(["kind", "sender", "receiver", "score", "top channel", "its share"],
                   [[t["kind"], f"L{t['sender'][0]}H{t['sender'][1]}",
                     f"L{t['receiver'][0]}H{t['receiver'][1]}",
                     t["score"], t["channels"][0]["component"] if t["channels"] else "–",
                     t["channels"][0]["share"] if t["channels"] else "–"] for t in heads["top"]])]


def _section_residual(result: dict, out: Path) -> list[str]:
    res = result["residual"]
    plot_residual(res, out / "residual.png", label=str(result.get("model", "model")))
    return [f"<h2>Hidden-state norm by depth</h2><p>{res['tokens']} tokens, "
            f"hidden size {res['hidden_size']}; "
            f"norm {res['norm'][0]:.3g} after the embedding, {max(res['norm']):.3g} at most.</p>",
            _img("residual.png"),
            _table(["model", "RMS of the first block's input", "RMS of the last block's output",
                    "max / min RMS over depth"],
                   [[name, one["rms"][0], one["rms"][-1], max(one["rms"]) / min(one["rms"])]
                    for name, one in {result.get("model", "model"): res, **res.get("others", {})}.items()])]


def _section_layers(result: dict, out: Path) -> list[str]:
    layers = result["weights"]["layers"]
    return ["<h2>Layers</h2>",
            _table(["layer", "shape", "α", "xmin", "KS D", "erank", "stable rank", "WeLore"],
                   [[n, "×".join(map(str, l["shape"])), l["alpha"], l["xmin"], l["ks_distance"],
                     l["effective_rank"], l["stable_rank"], l["welore"]["label"]]
                    for n, l in layers.items()])]


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
