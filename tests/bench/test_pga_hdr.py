"""bench/pga_hdr.py: patches and cue maps against direct computations, and a --quick run end to end
(files written, PGA and LoRA exact at init, trainable counts as the formulas give)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.fft import dct, dctn

from rankwise.apps.tone_spline import srgb_to_linear

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_pga_hdr", ROOT / "bench" / "pga_hdr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_patches_are_the_row_major_tiles_and_the_ragged_edge_is_cropped(bench):
    image = torch.arange(9 * 10, dtype=torch.float64).view(9, 10)
    tiles = bench.patches(image, 4)
    assert tiles.shape == (2, 2, 16)
    torch.testing.assert_close(tiles[1, 0], image[4:8, 0:4].flatten())
    torch.testing.assert_close(tiles[0, 1], image[0:4, 4:8].flatten())


def test_the_dct_matrix_is_scipys_orthonormal_dct_ii(bench):
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    matrix = bench.dct_matrix(4)
    torch.testing.assert_close(matrix @ x, torch.from_numpy(dct(x.numpy(), axis=0, norm="ortho")))
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(4, dtype=torch.float64))


def test_cue_maps_match_a_patch_by_patch_computation(bench):
    sdr = torch.rand(8, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cues = bench.cue_maps(sdr, 4)
    gy, gx = np.gradient(sdr.numpy())
    magnitude = np.hypot(gx, gy)
    u = np.arange(4)
    high = (u[:, None] + u[None]) >= 2
    assert cues.shape == (2, 3, 3)
    for i in range(2):
        for j in range(3):
            patch = (slice(4 * i, 4 * i + 4), slice(4 * j, 4 * j + 4))
            energy = (dctn(sdr.numpy()[patch], norm="ortho") ** 2)[high].sum()
            luminance = float(srgb_to_linear(sdr[patch]).mean())
            expected = [luminance, magnitude[patch].mean(), math.log(energy + 1e-6)]
            torch.testing.assert_close(cues[i, j], torch.tensor(expected, dtype=torch.float64))


def test_a_flat_image_has_no_gradient_and_no_high_band_energy(bench):
    cues = bench.cue_maps(torch.full((8, 8), 0.5, dtype=torch.float64), 4)
    grey = srgb_to_linear(torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(cues[..., 0], grey.expand(2, 2))
    assert (cues[..., 1] == 0).all()
    torch.testing.assert_close(cues[..., 2], torch.full((2, 2), math.log(1e-6), dtype=torch.float64))


def test_the_quick_run_writes_its_report_with_exact_inits_and_counted_parameters(bench, tmp_path, one_thread):
    settings = {**bench.SETTINGS, **bench.QUICK}
    report = bench.run(settings, tmp_path)
    assert json.loads((tmp_path / "pga_hdr.json").read_text())["claims"] == report["claims"]
    assert "## Claims" in (tmp_path / "pga_hdr.md").read_text()
    blocks, rank, width = settings["layers"], settings["rank"], settings["hidden"]
    per_projection = {"lora": rank * 2 * width, "pga": rank * (2 * width + 3) + 1}  # A, B (and the gate)
    pga = 4 * blocks * per_projection["pga"]  # 4 projections per block
    expected = {"frozen (floor)": 0, "lora": 4 * blocks * per_projection["lora"], "pga": pga,
                "pga, zeroed cues": pga}
    assert len(report["folds"]) == 2
    for fold in report["folds"].values():
        for name, trainable in expected.items():
            row = fold["variants"][name]
            assert row["trainable"] == trainable
            assert all(math.isfinite(r["test_psnr"]) for r in row["per_seed"])
            if name != "frozen (floor)":
                assert all(r["init_max_abs_diff_vs_frozen"] == 0.0 for r in row["per_seed"])
    assert report["claims"][0]["held"] and all(isinstance(c["held"], bool) for c in report["claims"])
