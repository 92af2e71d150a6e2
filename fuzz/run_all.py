"""Run every harness (or --only some) for --seconds each, one at a time, and write fuzz/results.json.

    .venv/bin/python fuzz/run_all.py --seconds 300 [--only config loaders]

Each harness fuzzes with libFuzzer (-max_total_time, -rss_limit_mb=4096) from its seed corpus
fuzz/corpus/<name>/ (read only) plus fuzz/work/<name>/ (what it grows; git-ignored), and writes crash
inputs to fuzz/artifacts/<name>/ (emptied when that harness starts). libFuzzer stops at the first crash,
so after one the harness restarts for the rest of its time with that finding's signature (exception
type and the rankwise line that raised it) listed in FUZZ_KNOWN, which the harness then skips: every
distinct finding is recorded once, with its own crash input. Timeouts and out-of-memory stops are
recorded too (as "timeout" / "oom"); after 3 of them the harness stops early.

results.json: {harness: {"seconds", "executions", "crashes": ["Type: message (raised at ...)"],
"findings": [{signature, kind, type, message, raised_at, innermost_frame, artifact}], "runs",
"source" (the git commit the library was at)}};
harnesses not run this time keep their earlier entry. Logs of each libFuzzer run: fuzz/logs/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = [
    "adapter_json",
    "adapter_folder",
    "safetensors",
    "checkpoint",
    "config",
    "loaders",
    "peft_config",
]
# Inputs may grow to a few times the largest seed (trainer_state.json is 29 kB).
MAX_LEN = {"checkpoint": 40000, "adapter_folder": 8192, "safetensors": 8192}
# Fuzzed files go to a RAM disk when there is one: on this disk every small write costs ~2 ms.
FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
MIN_SEGMENT = 15  # seconds: do not restart for less (import + corpus load take a few)
MAX_STOPS = 3  # timeouts / OOMs before giving up on a harness

_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.M)
_UNITS = re.compile(r"^stat::number_of_executed_units:\s*(\d+)", re.M)
_PROGRESS = re.compile(r"^#(\d+)\s", re.M)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


def executions(log: str) -> int:
    for pattern in (_DONE, _UNITS):
        found = pattern.findall(log)
        if found:
            return int(found[-1][0] if isinstance(found[-1], tuple) else found[-1])
    progress = _PROGRESS.findall(log)
    return int(progress[-1]) if progress else 0


def python_exception(log: str) -> tuple[str, str]:
    """(type, first message line) of the uncaught Python exception atheris printed, if any."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "=== Uncaught Python exception: ===" in line and i + 1 < len(lines):
            head = lines[i + 1]
            kind, _, message = head.partition(":")
            return kind.strip(), message.strip()
    return "", ""


def source_version() -> str:
    """The commit the library was at, plus "+dirty-<hash of the diff>" when src/ has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    if not git("status", "--porcelain", "--", "src").strip():
        return head
    diff = git("diff", "HEAD", "--", "src") + git("status", "--porcelain", "--", "src")
    return f"{head}+dirty-{hashlib.sha256(diff.encode()).hexdigest()[:8]}"


def run_harness(name: str, seconds: int, python: str) -> dict:
    corpus, work = HERE / "corpus" / name, HERE / "work" / name
    artifacts, logs = HERE / "artifacts" / name, HERE / "logs"
    shutil.rmtree(artifacts, ignore_errors=True)
    for folder in (work, artifacts, logs):
        folder.mkdir(parents=True, exist_ok=True)
    known: list[str] = []
    findings: list[dict] = []
    source = source_version()
    total_execs, spent, runs, stops = 0, 0.0, 0, 0
    while seconds - spent >= MIN_SEGMENT and stops < MAX_STOPS:
        runs += 1
        budget = int(seconds - spent)
        tmp = Path(tempfile.mkdtemp(prefix=f"rankwise-fuzz-run-{name}-", dir=FAST_TMP))
        known_file, finding_file = tmp / "known.json", tmp / "finding.json"
        known_file.write_text(json.dumps(known))
        env = dict(
            os.environ,
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONHASHSEED="0",
            FUZZ_KNOWN=str(known_file),
            FUZZ_FINDING=str(finding_file),
            FUZZ_TMPDIR=str(tmp),
        )
        cmd = [
            python,
            str(HERE / f"fuzz_{name}.py"),
            str(work),
            str(corpus),
            f"-max_total_time={budget}",
            "-rss_limit_mb=4096",
            "-timeout=30",
            "-print_final_stats=1",
            "-report_slow_units=1000000",
            f"-artifact_prefix={artifacts}/",
        ]
        cmd.append(f"-max_len={MAX_LEN.get(name, 4096)}")
        if (HERE / "dicts" / f"{name}.dict").is_file():
            cmd.append(f"-dict={HERE / 'dicts' / f'{name}.dict'}")
        log_path = logs / f"{name}-{runs}.log"
        start = time.monotonic()
        with open(log_path, "w") as log_file:
            try:
                proc = subprocess.run(
                    cmd,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=HERE.parent,
                    timeout=budget + 300,
                )
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = "killed"
        spent += time.monotonic() - start
        source = (
            source
            if source == source_version()
            else f"{source} .. {source_version()} (changed during the run)"
        )
        log = log_path.read_text(errors="replace")
        execs = executions(log)
        total_execs += execs
        written = [Path(p) for p in _ARTIFACT.findall(log)]
        crash = next((p for p in written if p.name.startswith(("crash-", "timeout-", "oom-", "leak-"))), None)
        print(
            f"[{name}] run {runs}: {spent:.0f}/{seconds} s, {execs} executions, rc {rc}"
            + (f", {crash.name}" if crash else ""),
            flush=True,
        )
        if finding_file.is_file():
            record = json.loads(finding_file.read_text())
            record["artifact"] = str(crash.relative_to(HERE.parent)) if crash else None
            findings.append(record)
            known.append(record["signature"])
        elif crash is not None:
            kind = crash.name.split("-")[0]
            exc_type, message = python_exception(log)
            findings.append(
                {
                    "signature": f"{kind} {exc_type}".strip(),
                    "kind": kind,
                    "type": exc_type or kind,
                    "message": message or f"libFuzzer {kind} (-timeout=30, -rss_limit_mb=4096)",
                    "raised_at": None,
                    "innermost_frame": None,
                    "artifact": str(crash.relative_to(HERE.parent)),
                }
            )
            stops += 1
        elif rc != 0:
            print(f"[{name}] stopped with rc {rc} and no crash input; see {log_path}", flush=True)
            stops += 1
        shutil.rmtree(tmp, ignore_errors=True)
    for leftover in artifacts.glob("slow-unit-*"):  # not findings
        leftover.unlink()
    crashes = [
        f"{f['type']}: {f['message']}"
        + (f" (raised at {f['raised_at']})" if f.get("raised_at") else "")
        + ("" if f["kind"] == "wrong exception type" else f" [{f['kind']}]")
        for f in findings
    ]
    return {
        "seconds": round(spent, 1),
        "executions": total_execs,
        "crashes": crashes,
        "findings": findings,
        "runs": runs,
        "source": source,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300, help="fuzzing time per harness")
    parser.add_argument("--only", nargs="*", choices=HARNESSES, help="run only these harnesses")
    parser.add_argument("--python", default=sys.executable, help="the interpreter with rankwise and atheris")
    args = parser.parse_args()
    results_path = HERE / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in args.only or HARNESSES:
        results[name] = run_harness(name, args.seconds, args.python)
        results_path.write_text(
            json.dumps(results, indent=1) + "\n"
        )  # after each harness: partial runs count
        print(
            f"[{name}] {results[name]['seconds']} s, {results[name]['executions']} executions, "
            f"{len(results[name]['crashes'])} finding(s)",
            flush=True,
        )
    total = sum(r["seconds"] for r in results.values())
    print(
        f"total: {total:.0f} s, {sum(r['executions'] for r in results.values())} executions, "
        f"{sum(len(r['crashes']) for r in results.values())} finding(s); see {results_path}"
    )


if __name__ == "__main__":
    main()
