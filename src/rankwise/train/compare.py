"""`rankwise bench`: every adapter method on the same tasks and step budget, each at its own best rate.

For each (method, task) the sweep trains one cell per learning rate at the first seed, picks the rate
with the best held-out exact match (ties: the lower final loss), then trains the other seeds at that
rate. A cell is one rankwise.finetune run in <runs>/cells/<method>/<task>/lr<lr>-seed<seed>; its
results.json marks it finished, so a rerun skips it (and a stopped sweep resumes where it stopped). The
report (results.json, results.md, two PNGs) goes to <out>, apart from the runs' adapters and logs.

The comparison is fair in what it holds fixed: model, data, batches, steps, warmup, evaluation, and
rank 8 / alpha 16 on all linear layers for every method that has those fields (block methods keep their
own targets). Rates are `lrs` × the method's `lr_scale` (1 unless its paper trains at a larger rate,
e.g. SVFit's singular values), so each method's grid is centred where its paper says it works. This is
the protocol of "A Unified Study of LoRA Variants" (He et al., arXiv 2601.22708): tune the rate per
variant, then compare.

Per method, a probe in this process (rankwise.train.probe) adds step time, peak memory, merged-inference
parity and, where PEFT has the method, PEFT's twin on the same batches.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

DEFAULT_TASKS = ["mental-math", "unit-conversion"]  # neither saturates in a short budget (see README)


@dataclass
class BenchConfig:
    """One sweep. `methods` None: every registered adapter method. `data`: a prompt/answer JSONL file
    benchmarked instead of `tasks` (split once, 90/10, with a fixed seed)."""

    methods: list[str] | None = None
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    data: str | None = None
    model: str = "smollm2-135m"
    steps: int = 30
    # 1e-4 never won a cell of the first sweep and 3e-3 won every one, so the grid sits one step higher.
    lrs: list[float] = field(default_factory=lambda: [3e-4, 1e-3, 3e-3, 1e-2])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    extend: int = 2  # while the best rate is the highest or lowest tried, step past it, at most this often
    rank: int = 8
    alpha: float = 16.0
    batch_size: int = 8
    max_length: int = 96
    eval_size: int = 40
    max_new_tokens: int = 8
    probe: bool = True
    probe_shape: tuple[int, int] = (4, 128)  # the probe's batch: rows × tokens
    probe_rounds: int = 5
    out: str = "bench/results/bench"
    runs: str = "runs/bench"
    progress: bool = True

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """Every method, one task, a few steps on tiny-llama: checks the whole pipeline in about a minute."""
        preset = dict(model="tiny-llama", tasks=["iso-dates"], steps=3, lrs=[1e-3, 3e-2], seeds=[0, 1],
                      batch_size=4, max_length=96, eval_size=4, max_new_tokens=4, probe_shape=(2, 32),
                      probe_rounds=2)
        return cls(**{**preset, **overrides})

    def check(self) -> None:
        from ..adapters import ADAPTERS
        from ..data import list_tasks

        self.methods = list(self.methods or ADAPTERS.names())
        unknown = sorted(set(self.methods) - set(ADAPTERS.names()))
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown}; `rankwise methods` lists {ADAPTERS.names()}.")
        if self.data is None:
            missing = sorted(set(self.tasks) - set(list_tasks()))
            if missing or not self.tasks:
                raise ConfigError(f"unknown or no task(s) {missing}; bundled tasks: {list_tasks()}.")
        elif not Path(self.data).is_file():
            raise ConfigError(f"--data {self.data}: no such file; give a JSONL file of prompt/answer rows.")
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise ConfigError(f"learning rates must be positive numbers, got {self.lrs}.")
        if self.extend < 0:
            raise ConfigError(f"extend must be 0 or more, got {self.extend}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"give one or more distinct seeds, got {self.seeds}.")
        for name in ("steps", "rank", "batch_size", "max_length", "eval_size", "max_new_tokens",
                     "probe_rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")


def method_fields(method: str, config: BenchConfig) -> dict[str, Any]:
    """The shared adapter fields a method takes: rank, alpha, and all linear layers where it wraps them."""
    from ..adapters import ADAPTERS

    cls = ADAPTERS.get(method)
    known = cls.config_class.field_names()
    fields = {k: v for k, v in (("rank", config.rank), ("alpha", config.alpha)) if k in known}
    if cls.wraps_what == "nn.Linear layers":
        fields["targets"] = "all-linear"
    return fields


def method_lrs(method: str, config: BenchConfig) -> list[float]:
    from ..adapters import ADAPTERS

    scale = getattr(ADAPTERS.get(method), "lr_scale", 1.0)
    return [float(f"{lr * scale:.3g}") for lr in config.lrs]


def rate_beyond_edge(tried: list[float], best: float) -> float | None:
    """The next rate past the sweep's edge when `best` sits on it (one grid step further: the ratio of
    the two rates at that edge), else None: a best rate on the edge says the optimum may lie beyond."""
    rates = sorted(tried)
    if len(rates) < 2 or best not in (rates[0], rates[-1]):
        return None
    edge, inner = (rates[-1], rates[-2]) if best == rates[-1] else (rates[0], rates[1])
    return float(f"{edge * edge / inner:.3g}")


def _data_split(config: BenchConfig, out: Path) -> dict[str, str]:
    """A user's file split once (seed 0), so every cell and seed sees the same train and eval rows."""
    from ..data import load_examples
    from ..io import atomic_path

    rows = load_examples(config.data, "prompt", "answer")
    if len(rows) < 10:
        raise ConfigError(f"{config.data}: {len(rows)} rows; a benchmark needs at least 10 (a tenth is held "
                          "out).")
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    held = max(1, len(rows) // 10)
    files = {"data": out / "data.train.jsonl", "eval_data": out / "data.eval.jsonl"}
    for name, chosen in (("eval_data", order[:held]), ("data", order[held:])):
        with atomic_path(files[name]) as tmp:
            tmp.write_text("".join(json.dumps(rows[i]) + "\n" for i in chosen), encoding="utf-8")
    return {k: str(v) for k, v in files.items()}


def run_cell(config: BenchConfig, method: str, source: dict[str, str], lr: float, seed: int,
             out: Path) -> dict[str, Any]:
    """One finetune run (or its saved result): accuracy, final loss, adapter size, median step time.

    A run whose loss turns NaN is a result of the sweep, not the end of it: it scores 0, its reason is
    kept in diverged.json (so a rerun skips it too) and the sweep goes on to the next rate.
    """
    from ..errors import TrainingDiverged
    from ..io import write_json
    from .run import finetune

    done, diverged = out / "results.json", out / "diverged.json"
    if not done.is_file() and not diverged.is_file():
        try:
            finetune({"model": config.model, "method": method, **method_fields(method, config), **source,
                      "learning_rate": lr, "seed": seed, "max_steps": config.steps, "warmup_ratio": 0.1,
                      "per_device_train_batch_size": config.batch_size, "max_length": config.max_length,
                      "eval_size": config.eval_size, "max_new_tokens": config.max_new_tokens,
                      "eval_base": False, "save_every": 0, "output_dir": str(out), "progress": False})
        except TrainingDiverged as error:
            write_json(diverged, {"error": str(error)})
    log = out / "log.jsonl"
    rows = map(json.loads, log.read_text().splitlines()) if log.is_file() else []
    seconds = [r["seconds"] for r in rows if "seconds" in r]
    cell = {"lr": lr, "seed": seed,
            "step_time_s": statistics.median(seconds[1:] or seconds) if seconds else None}
    if not done.is_file():
        return {**cell, "accuracy": 0.0, "final_loss": None, "trainable_params": None, "adapter_bytes": None,
                "diverged": json.loads(diverged.read_text())["error"]}
    result = json.loads(done.read_text())
    adapter = Path(result["adapter_path"])
    return {**cell, "accuracy": result["tuned_exact_match"], "final_loss": result["final_loss"],
            "trainable_params": result["trainable_parameters"],
            "adapter_bytes": sum(p.stat().st_size for p in adapter.iterdir() if p.is_file())}


def base_cell(config: BenchConfig, source: dict[str, str], out: Path) -> float:
    """The base model's exact match (no adapter) on the cells' held-out examples, cached in `out`: the
    floor that says whether a method learned anything."""
    from ..io import write_json
    from ..models import load
    from .config import TrainConfig
    from .evaluate import exact_match
    from .run import split_examples

    done = out / "results.json"
    if not done.is_file():
        split = TrainConfig(model=config.model, **source, eval_size=config.eval_size, output_dir=str(out))
        _, held_out = split_examples(split)
        model, tokenizer = load(config.model)
        score = exact_match(model, tokenizer, held_out, max_new_tokens=config.max_new_tokens, progress=False)
        write_json(done, {"base_exact_match": score["exact_match"], "examples": len(held_out)})
    return json.loads(done.read_text())["base_exact_match"]


def _median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _best(cells: list[dict]) -> dict:
    def key(cell):
        loss = cell["final_loss"] if cell["final_loss"] is not None else float("inf")
        return (-(cell["accuracy"] or 0.0), loss)

    return min(cells, key=key)


def bench(config: BenchConfig | dict[str, Any]) -> list[dict[str, Any]]:
    """Run (or resume) the sweep; returns one record per (method, task) and writes results.json,
    results.md and the plots into config.out."""
    from tqdm.auto import tqdm

    from ..io import write_json
    from .compare_report import write_report
    from .probe import probe

    config = config if isinstance(config, BenchConfig) else BenchConfig(**config)
    config.check()
    out, runs = Path(config.out), Path(config.runs)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    sources = ({"data": _data_split(config, runs)} if config.data is not None
               else {task: {"task": task} for task in config.tasks})
    cells_total = len(config.methods) * len(sources) * (len(config.lrs) + len(config.seeds) - 1)
    bar = tqdm(total=cells_total, desc="bench", unit="run", disable=not config.progress)
    bases = {task: base_cell(config, source, runs / "cells" / "base" / task)
             for task, source in sources.items()}
    records = []
    for method in config.methods:
        batch, seq = config.probe_shape
        probed = probe(config.model, method, method_fields(method, config), runs / "probes", batch=batch,
                       seq=seq, rounds=config.probe_rounds, total_steps=config.steps) if config.probe else {}
        for task, source in sources.items():
            where = runs / "cells" / method / task
            first, *others = config.seeds
            sweep = []
            rates = method_lrs(method, config)
            for index in range(len(rates) + config.extend):
                lr = rates[index] if index < len(rates) else rate_beyond_edge([c["lr"] for c in sweep],
                                                                              _best(sweep)["lr"])
                if lr is None:
                    break
                if index >= len(rates):
                    bar.total += 1
                bar.set_postfix_str(f"{method} {task} lr {lr:g}")
                sweep.append(run_cell(config, method, source, lr, first, where / f"lr{lr:g}-seed{first}"))
                bar.update(1)
            best = _best(sweep)
            at_best = [best]
            for seed in others:
                bar.set_postfix_str(f"{method} {task} seed {seed}")
                at_best.append(run_cell(config, method, source, best["lr"], seed,
                                     where / f"lr{best['lr']:g}-seed{seed}"))
                bar.update(1)
            scores = [r["accuracy"] or 0.0 for r in at_best]
            records.append({
                "method": method, "task": task, "model": config.model, "steps": config.steps,
                "base_accuracy": bases[task], "lr": best["lr"], "seed": [r["seed"] for r in at_best],
                "accuracy": statistics.mean(scores),
                "accuracy_spread": max(scores) - min(scores), "accuracy_per_seed": scores,
                "final_loss": _median([r["final_loss"] for r in at_best]),
                # From any finished run when every rate diverged (the counts do not depend on the rate).
                **{key: next((c[key] for c in [best, *sweep] if c[key] is not None), None)
                   for key in ("trainable_params", "adapter_bytes")},
                "train_step_time_s": _median([r["step_time_s"] for r in at_best]),
                "sweep": {f"{c['lr']:g}": c["accuracy"] for c in sweep},
                "diverged": {f"{c['lr']:g}-seed{c['seed']}": c["diverged"] for c in sweep + at_best[1:]
                             if "diverged" in c},
                "best_lr_at_edge": rate_beyond_edge([c["lr"] for c in sweep], best["lr"]) is not None,
                "sweep_final_loss": {f"{c['lr']:g}": c["final_loss"] for c in sweep}, **probed})
            write_json(out / "results.json", {"config": dataclasses.asdict(config), "records": records})
        write_report(config, records, out)  # after every method: a stopped sweep still has its report
    bar.close()
    return records
