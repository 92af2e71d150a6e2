"""The report of a `rankwise bench` sweep: a markdown table and two plots next to results.json."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def machine_description() -> str:
    """CPU model, logical CPUs, memory and OS, for the report's header (Linux's /proc where it exists)."""
    cpu, memory = platform.processor() or platform.machine(), ""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                    if line.startswith("model name")), cpu)
        total_kib = int(Path("/proc/meminfo").read_text(encoding="utf-8").split()[1])  # "MemTotal: N kB"
        memory = f", {total_kib / 2**20:.0f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass  # not Linux: the processor string alone
    return f"{cpu}, {os.cpu_count()} logical CPUs{memory}, {platform.system()} {platform.machine()}"


def table(records: list[dict[str, Any]]) -> list[str]:
    lines = ["| method | task | best lr | exact match (mean ± spread) | base | final loss | trainable | "
             "adapter KiB | step s | peak MiB | merged Δ | PEFT step × | PEFT mem × | PEFT Δ after 1 step |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(records, key=lambda r: (r["task"], -r["accuracy"], r["method"])):
        lines.append(
            f"| {r['method']} | {r['task']} | {r['lr']:g}{' (edge)' if r.get('best_lr_at_edge') else ''} | "
            f"{r['accuracy']:.3f} ± "
            f"{r['accuracy_spread']:.3f} | {_number(r.get('base_accuracy'), '.3f')} | "
            f"{_number(r.get('final_loss'), '.3f')} | "
            f"{_number(r['trainable_params'], ',')} | "
            f"{_number(None if r['adapter_bytes'] is None else r['adapter_bytes'] / 1024, '.0f')} | "
            f"{_number(r.get('step_time_s'), '.3f')} | "
            f"{_number(r.get('peak_mem_mb'), '.0f')} | {_number(r.get('merged_max_abs_diff'), '.1e')} | "
            f"{_number(r.get('peft_step_ratio'), '.2f')} | {_number(r.get('peft_mem_ratio'), '.2f')} | "
            f"{_number(r.get('peft_one_step_max_abs_diff'), '.1e')} |")
    return lines


def write_report(config, records: list[dict[str, Any]], out: Path) -> None:
    """results.md (setup, table) and accuracy_vs_params.png, accuracy_vs_lr.png in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..io import atomic_path

    setup = (f"{config.model}, {config.steps} steps, batch {config.batch_size}, {len(config.lrs)} learning "
             f"rates {config.lrs} (× each method's lr_scale; up to {config.extend} more past an edge that "
             f"wins; \"(edge)\": the best is still the highest or lowest tried), seeds {config.seeds}, "
             f"exact match on "
             f"{config.eval_size} held-out examples. Machine: {machine_description()}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}.")
    text = "\n".join([f"# rankwise bench\n\n{setup}\n", *table(records), ""])
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text, encoding="utf-8")

    tasks = sorted({r["task"] for r in records})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), dpi=110, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in records if r["task"] == task and r["trainable_params"] is not None):
            ax.errorbar(r["trainable_params"], r["accuracy"], yerr=r["accuracy_spread"] / 2, fmt="o", ms=4)
            ax.annotate(r["method"], (r["trainable_params"], r["accuracy"]), fontsize=6)
        ax.set(xscale="log", xlabel="trainable parameters", ylabel="held-out exact match", title=task)
    fig.tight_layout()
    with atomic_path(out / "accuracy_vs_params.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

    fig, axes = plt.subplots(2, len(tasks), figsize=(6 * len(tasks), 8), dpi=110, squeeze=False)
    for column, task in enumerate(tasks):
        for r in (r for r in records if r["task"] == task):
            rates = sorted(r["sweep"], key=float)
            for row, (key, missing) in enumerate((("sweep", 0.0), ("sweep_final_loss", float("nan")))):
                values = r.get(key, {})
                axes[row][column].plot([float(x) for x in rates],
                                       [missing if values.get(x) is None else values[x] for x in rates],
                                       marker="o", ms=3, label=r["method"])
        axes[0][column].set(xscale="log", ylabel="held-out exact match (first seed)", title=task)
        axes[1][column].set(xscale="log", xlabel="learning rate", ylabel="final training loss")
        axes[0][column].legend(fontsize=5, ncol=2)
    fig.tight_layout()
    with atomic_path(out / "accuracy_vs_lr.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
