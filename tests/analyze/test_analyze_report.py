"""write_report: JSON, PNGs and an HTML page whose <img> tags point at PNGs that exist;
Chromium renders it.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rankwise.analyze import (
    analyze_weights,
    compare,
    gradient_spectra,
    head_composition,
    rank_examples,
    write_report,
)
from tests.conftest import make_tiny_llama

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    base = make_tiny_llama(0)
    examples = [{"input_ids": [1, 5, 9, 3, 7], "labels": [-100, -100, 9, 3, 7]},
                {"input_ids": [2, 4, 6, 8], "labels": [-100, 4, 6, 8]}]
    spectra = gradient_spectra(base, None, examples, progress=False)
    result = {"model": "tiny", "weights": analyze_weights(base, progress=False),
              "compare": {f"tiny seed {seed}": compare(base, make_tiny_llama(seed), k=5, progress=False)
                          for seed in (1, 2)},
              "gradients": {"data.jsonl": {**spectra,
                                           "ranking": rank_examples(base, None, examples, spectra=spectra),
                                           "rank_by": "effective_rank", "score": 1.0}},
              "heads": head_composition(base, top=3, progress=False),
              "residual": {"norm": [1.0, 2.0, 2.5], "rms": [0.2, 0.4, 0.5], "growth": [2.0, 1.25],
                           "tokens": 5, "hidden_size": 32}}
    return write_report(result, tmp_path_factory.mktemp("report"))


def test_report_files_are_written_and_html_images_exist(report):
    out = report.parent
    data = json.loads((out / "report.json").read_text())
    assert data["weights"]["summary"]["n_layers"] == 14 and data["compare"]["tiny seed 2"]["k"] == 5
    images = re.findall(r'<img src="([^"]+)"', report.read_text())
    assert images == ["spectra.png", "alpha.png", "intruders.png", "gradients.png", "heads.png",
                      "residual.png"]
    for name in images:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 5000
    page = report.read_text()
    assert "q_proj" in page and "tiny seed 1" in page and "tiny seed 2" in page and "L0H" in page
    assert not list(out.glob(".*tmp*"))


def test_report_without_comparison_has_no_intruder_plot(tmp_path):
    html = write_report({"model": "tiny", "weights": analyze_weights(make_tiny_llama(), progress=False)},
                        tmp_path)
    assert "intruders.png" not in html.read_text() and not (tmp_path / "intruders.png").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           f"--screenshot={shot}", "--window-size=1200,900", report.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000
    # Chromium logs page console messages and failed loads as CONSOLE(...) / "Failed to load" lines.
    errors = [line for line in proc.stderr.splitlines()
              if "CONSOLE" in line or "Uncaught" in line or "ERR_FILE_NOT_FOUND" in line]
    assert errors == []
