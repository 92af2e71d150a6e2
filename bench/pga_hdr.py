"""Issue 15's PGA claim at small scale, from LumaFlux (Saini, Gedik, Birkbeck, Wang, Adsumilli, Bovik,
arXiv 2604.02787): a frozen generator adapted to SDR→HDR by physically-guided adaptation (PGA: a gated
low-rank residual on the attention projections that also reads per-token cue maps, rankwise's `pga`)
beats plain LoRA at the same rank.

    OMP_NUM_THREADS=1 .venv/bin/python bench/pga_hdr.py [--quick] [--out bench/results]

Scaled down from the paper: no Flux DiT, no diffusion, no VAE, no tone decoder; luminance only; a 2-layer,
64-wide pre-norm transformer (q/k/v/o as separate nn.Linear, no attention mask) pre-trained here stands in
for the frozen generator; one gate per layer (rankwise's pga), not a timestep-dependent one.

Data (no download): bench/tone_spline.py's synthetic pair from scikit-learn's two photos (HDR = 1000·Y²
cd/m², SDR = 8-bit sRGB of Reinhard's operator), imported, not rebuilt. A token is one 4×4 patch of the
full-resolution image (16 values); a sequence is an 8×8 window of patches. Two folds: train on one photo,
test on the other.
1. Frozen generator: all weights pre-trained per fold on the training photo's SDR only (1000 Adam steps,
   lr 3e-3 cosine) to reconstruct every token's SDR codes with 25 % of input tokens zeroed (masked patch
   reconstruction): it knows SDR images and nothing of HDR. Then frozen.
2. Adapted to SDR→HDR (each patch's HDR PQ codes, MSE) by rankwise.adapt on q/k/v/o_proj of both blocks,
   rank 4, alpha 8: (a) `lora`; (b) `pga` with LumaFlux's three physical cues per token from the SDR
   input: mean display luminance (sRGB decoded), mean gradient magnitude of the codes, log energy of the
   patch's high DCT band (u + v ≥ 2 of the orthonormal 4×4 DCT-II), each standardized with the training
   photo's mean and std; (c) the frozen model alone (floor); (d) `pga` with zeroed cues (a gated LoRA),
   isolating what the cues add. Reference, not fitted: tone_spline's exact inverse on the 8-bit codes.
Same budget for every variant: 500 Adam steps, batch 16 windows at random positions, lr 3e-3 cosine to 0;
per adapter seed (0, 1, 2) the same window sequence and the same torch seed before `adapt`. PQ-PSNR =
10 log10(1 / MSE) over the pixels of the held-out photo's non-overlapping windows (cropped to whole
windows). Nothing was tuned.

Criteria, fixed before the run:
- "PGA is the frozen model at init" holds if, cues set, PGA's output before any step equals the frozen
  model's exactly (max |difference| = 0) on every fold and seed.
- "cue-driven PGA beats plain LoRA at the same rank on held-out PQ-PSNR" holds if PGA's seed-mean
  held-out PQ-PSNR exceeds LoRA's on both folds.
- "the cues add to PGA" holds if PGA's seed-mean held-out PQ-PSNR exceeds that of PGA with zeroed cues
  on both folds.
Writes pga_hdr.json (settings, machine, every number) and pga_hdr.md.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import rankwise  # noqa: E402
from rankwise.adapters import layers_of  # noqa: E402
from rankwise.adapters.pga import set_cues  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_tone_spline", ROOT / "bench" / "tone_spline.py")
TONE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(TONE)  # the SDR/HDR pair, PQ-PSNR and the exact inverse, shared with that bench

SETTINGS = {"pixel_stride": 1, "patch": 4, "window": 8, "hidden": 64, "heads": 4, "mlp": 256, "layers": 2,
            "pretrain_steps": 1000, "pretrain_lr": 3e-3, "mask": 0.25, "pretrain_seed": 0, "steps": 500,
            "batch": 16, "lr": 3e-3, "rank": 4, "alpha": 8.0, "seeds": [0, 1, 2],
            "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "tone": TONE.SETTINGS}
QUICK = {"pixel_stride": 4, "hidden": 32, "mlp": 64, "pretrain_steps": 20, "steps": 10, "seeds": [0]}
VARIANTS = {"frozen (floor)": (None, None), "lora": ("lora", None), "pga": ("pga", "cues"),
            "pga, zeroed cues": ("pga", "zeros")}  # name: (method, cues)


def patches(image: torch.Tensor, p: int) -> torch.Tensor:
    """(H, W) → (H // p, W // p, p·p), row-major within each patch; the ragged edge is cropped."""
    rows, cols = image.shape[0] // p * p, image.shape[1] // p * p
    return image[:rows, :cols].unfold(0, p, p).unfold(1, p, p).flatten(-2)


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II: row k is sqrt(2/n) cos(π (2i + 1) k / 2n), row 0 divided by sqrt(2)."""
    k, i = torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n, dtype=torch.float64)[None]
    matrix = math.sqrt(2 / n) * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    matrix[0] /= math.sqrt(2)
    return matrix


def cue_maps(sdr: torch.Tensor, p: int) -> torch.Tensor:
    """(H // p, W // p, 3) per patch: mean display luminance, mean gradient magnitude, log high-DCT energy."""
    gy, gx = torch.gradient(sdr)
    dct = dct_matrix(p).to(sdr.dtype)
    coefficients = dct @ patches(sdr, p).unflatten(-1, (p, p)) @ dct.T
    u = torch.arange(p)
    energy = coefficients.pow(2)[..., (u[:, None] + u[None]) >= p // 2].sum(-1)
    return torch.stack([patches(TONE.srgb_to_linear(sdr), p).mean(-1),
                        patches((gx * gx + gy * gy).sqrt(), p).mean(-1), torch.log(energy + 1e-6)], -1)


class Block(nn.Module):
    """Pre-norm attention (no mask) and GELU MLP; q/k/v/o are plain nn.Linear so adapters can wrap them."""

    def __init__(self, width: int, heads: int, mlp: int):
        super().__init__()
        self.heads, self.norm1, self.norm2 = heads, nn.LayerNorm(width), nn.LayerNorm(width)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(width, width) for _ in range(4))
        self.up, self.down = nn.Linear(width, mlp), nn.Linear(mlp, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm1(h)
        q, k, v = (proj(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        h = h + self.o_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
        return h + self.down(F.gelu(self.up(self.norm2(h))))


class PatchTransformer(nn.Module):
    def __init__(self, features: int, tokens: int, s: dict):
        super().__init__()
        self.embed = nn.Linear(features, s["hidden"])
        self.position = nn.Parameter(0.02 * torch.randn(tokens, s["hidden"]))
        self.blocks = nn.ModuleList(Block(s["hidden"], s["heads"], s["mlp"]) for _ in range(s["layers"]))
        self.norm, self.head = nn.LayerNorm(s["hidden"]), nn.Linear(s["hidden"], features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.position
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def windows(grid: torch.Tensor, corners: torch.Tensor, w: int) -> torch.Tensor:
    """(B, w·w, features): the w×w windows of a patch grid (Hp, Wp, features) at corners (B, 2)."""
    return torch.stack([grid[i:i + w, j:j + w].flatten(0, 1) for i, j in corners.tolist()])


def random_corners(grid: torch.Tensor, s: dict, steps: int, seed: int) -> torch.Tensor:
    generator, w = torch.Generator().manual_seed(seed), s["window"]
    rows = torch.randint(grid.shape[0] - w + 1, (steps, s["batch"]), generator=generator)
    return torch.stack([rows, torch.randint(grid.shape[1] - w + 1, rows.shape, generator=generator)], -1)


def tile_corners(grid: torch.Tensor, w: int) -> torch.Tensor:
    return torch.tensor([(i, j) for i in range(0, grid.shape[0] - w + 1, w)
                         for j in range(0, grid.shape[1] - w + 1, w)])


def run_model(model: nn.Module, data: dict, corners: torch.Tensor, w: int, cues: str | None,
              keep: torch.Tensor | float = 1.0) -> torch.Tensor:
    if cues is not None:  # "zeros": no cues, so PGA's cue columns see zeros
        set_cues(model, windows(data["cues"], corners, w) if cues == "cues" else None)
    return model(windows(data["sdr"], corners, w) * keep)


def fit(model: nn.Module, data: dict, corners: torch.Tensor, s: dict, lr: float, target: str,
        cues: str | None = None, mask: float = 0.0) -> float:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, len(corners))
    masks, w = torch.Generator().manual_seed(0), s["window"]
    for batch in corners:
        keep = (torch.rand(len(batch), w * w, 1, generator=masks) >= mask).float()
        loss = F.mse_loss(run_model(model, data, batch, w, cues, keep), windows(data[target], batch, w))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return loss.item()


def photo_data(s: dict) -> dict[str, dict]:
    shapes, data, stride = [image.shape[:2] for image in load_sample_images().images], {}, s["pixel_stride"]
    for (name, pair), shape in zip(TONE.photo_pairs().items(), shapes):  # flat, row-major per photo
        sdr, hdr = (values.view(shape)[::stride, ::stride] for values in pair)
        data[name] = {"sdr": patches(sdr, s["patch"]).float(), "hdr": patches(hdr, s["patch"]).float(),
                      "raw_cues": cue_maps(sdr, s["patch"])}
    return data


def run_fold(train: dict, test: dict, s: dict) -> dict:
    w, reference = s["window"], train["raw_cues"].flatten(0, 1)
    for part in (train, test):
        part["cues"] = ((part["raw_cues"] - reference.mean(0)) / reference.std(0)).float()
    torch.manual_seed(s["pretrain_seed"])
    frozen = PatchTransformer(s["patch"] ** 2, w * w, s)
    corners = random_corners(train["sdr"], s, s["pretrain_steps"], s["pretrain_seed"])
    pretrain_loss = fit(frozen, train, corners, s, s["pretrain_lr"], "sdr", mask=s["mask"])
    frozen.requires_grad_(False)
    parts = {"train": (train, tile_corners(train["sdr"], w)), "test": (test, tile_corners(test["sdr"], w))}
    targets = {k: windows(d["hdr"], tiles, w).double() for k, (d, tiles) in parts.items()}
    sdr_test = windows(test["sdr"], parts["test"][1], w).double()
    with torch.no_grad():
        frozen_out = run_model(frozen, test, parts["test"][1], w, None)
    rows = {name: {"per_seed": []} for name in VARIANTS}
    exact = TONE.psnr(TONE.exact_inverse(sdr_test), targets["test"])
    rows["exact inverse (reference)"] = {"test_psnr": exact}
    for seed in s["seeds"]:
        corners = random_corners(train["sdr"], s, s["steps"], seed)
        for name, (method, cues) in VARIANTS.items():
            model, record = copy.deepcopy(frozen), {"seed": seed}
            if method is not None:
                torch.manual_seed(seed)
                extra = {"cue_features": 3} if method == "pga" else {}
                rankwise.adapt(model, method, rank=s["rank"], alpha=s["alpha"], targets=s["targets"], **extra)
                with torch.no_grad():
                    gap = (run_model(model, test, parts["test"][1], w, cues) - frozen_out).abs().max()
                record["init_max_abs_diff_vs_frozen"] = float(gap)
                record["final_loss"] = fit(model, train, corners, s, s["lr"], "hdr", cues)
                if method == "pga":  # the trained gate of each adapted projection
                    record["gates"] = {path: a.gate.item() for path, a in layers_of(model, "default").items()}
            rows[name]["trainable"] = rankwise.trainable_parameters(model)["trainable"]
            with torch.no_grad():
                for part, (data, tiles) in parts.items():
                    record[f"{part}_psnr"] = TONE.psnr(run_model(model, data, tiles, w, cues), targets[part])
            rows[name]["per_seed"].append(record)
    for row in (row for row in rows.values() if "per_seed" in row):
        row["test_psnr"] = float(np.mean([r["test_psnr"] for r in row["per_seed"]]))
        if gates := [abs(g) for r in row["per_seed"] for g in r.get("gates", {}).values()]:
            row["mean_abs_gate"] = float(np.mean(gates))
    return {"variants": rows, "pretrain_final_loss": pretrain_loss, "test_windows": len(parts["test"][1]),
            "frozen_parameters": sum(p.numel() for p in frozen.parameters()),
            "test_pixels_above_train_max_sdr": float((sdr_test > train["sdr"].max()).double().mean())}


def judge(folds: dict) -> list[dict]:
    gaps = [r["init_max_abs_diff_vs_frozen"] for f in folds.values()
            for r in f["variants"]["pga"]["per_seed"]]
    claims = [{"claim": "PGA is the frozen model at init (cues set, zero gate)", "held": max(gaps) == 0.0,
               "numbers": f"max |PGA - frozen| before any step: {max(gaps):.1e}"}]
    for claim, other in (("cue-driven PGA beats plain LoRA at the same rank on held-out PQ-PSNR", "lora"),
                         ("the cues add to PGA (PGA beats PGA with zeroed cues)", "pga, zeroed cues")):
        diff = {k: f["variants"]["pga"]["test_psnr"] - f["variants"][other]["test_psnr"]
                for k, f in folds.items()}
        claims.append({"claim": claim, "held": all(d > 0 for d in diff.values()), "numbers": "; ".join(
            f"{k}: PGA - {other} = {d:+.2f} dB (seed mean)" for k, d in diff.items())})
    return claims


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = ["# LumaFlux PGA vs LoRA on SDR→HDR patches (arXiv 2604.02787), scaled down", "",
             f"Machine: {m['platform']}, torch {m['torch']}, {m['threads']} thread(s); {m['seconds']} s. "
             f"Frozen {s['layers']}-layer width-{s['hidden']} patch transformer pre-trained on masked SDR "
             f"reconstruction; adapters rank {s['rank']} (alpha {s['alpha']}) on {', '.join(s['targets'])}; "
             f"{s['steps']} Adam steps of {s['batch']} windows of {s['window']}×{s['window']} "
             f"{s['patch']}×{s['patch']} patches; seeds {s['seeds']}. PQ-PSNR over the held-out photo "
             "(cropped to whole windows). See the docstring of bench/pga_hdr.py for the setup.", ""]
    for fold, result in report["folds"].items():
        lines += [f"## {fold}", "", "| variant | trainable | train PQ-PSNR (dB) | held-out PQ-PSNR (dB) "
                  "per seed | held-out mean (dB) | init max abs diff |", "|---|---|---|---|---|---|"]
        for name, row in result["variants"].items():
            runs = row.get("per_seed", [])
            train, test = (" / ".join(f"{r[k]:.2f}" for r in runs) or "-"
                           for k in ("train_psnr", "test_psnr"))
            init = max((r["init_max_abs_diff_vs_frozen"] for r in runs if "final_loss" in r), default=None)
            lines.append(f"| {name} | {row.get('trainable', '-')} | {train} | {test} | "
                         f"{row['test_psnr']:.2f} | {'-' if init is None else f'{init:.1e}'} |")
        lines += ["", f"Frozen model: {result['frozen_parameters']} parameters, pre-training loss "
                  f"{result['pretrain_final_loss']:.2e}; {result['test_windows']} held-out windows; "
                  f"{100 * result['test_pixels_above_train_max_sdr']:.1f} % of held-out pixels have SDR "
                  "codes above the training photo's maximum. Mean |gate| after training: " + ", ".join(
                      f"{k} {row['mean_abs_gate']:.3f}" for k, row in result["variants"].items()
                      if "mean_abs_gate" in row) + ".", ""]
    lines += ["## Claims", ""] + [f"- **{'held' if c['held'] else 'not held'}**: {c['claim']} "
                                  f"({c['numbers']})" for c in report["claims"]]
    return "\n".join(lines) + "\n"


def run(settings: dict, out: Path) -> dict:
    start = time.time()
    data = photo_data(settings)
    folds = {f"train {a} → test {b}": run_fold(data[a], data[b], settings)
             for a, b in (("china", "flower"), ("flower", "china"))}
    machine = {"platform": platform.platform(), "python": platform.python_version(),
               "torch": torch.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__,
               "threads": torch.get_num_threads(), "seconds": round(time.time() - start, 1)}
    report = {"settings": settings, "machine": machine, "folds": folds, "claims": judge(folds)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "pga_hdr.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "pga_hdr.md").write_text(markdown(report))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--quick", action="store_true", help="a small image and a few steps: seconds")
    args = parser.parse_args()
    print(markdown(run({**SETTINGS, **QUICK} if args.quick else SETTINGS, Path(args.out))))
