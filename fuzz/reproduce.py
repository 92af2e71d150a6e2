"""Re-run every crash input in fuzz/artifacts/ against the current code and say what each does now.

    .venv/bin/python fuzz/reproduce.py [--update]

Each input runs alone (`python fuzz/fuzz_<name>.py <input>`). The script prints the finding, or "passes"
when rankwise now raises a RankwiseError with a one-line message. With --update, fuzz/results.json gets
"now" (that finding) and "checked_at" for each finding (run_all.source_version: the git commit, plus a
hash of any uncommitted change to src/).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
sys.path.insert(0, str(HERE))
from run_all import source_version  # noqa: E402

_FINDING = re.compile(r"=== rankwise fuzz finding: (\{.*\})")
_UNCAUGHT = re.compile(r"=== Uncaught Python exception: ===\n(.*)")


def reproduce(name: str, artifact: Path, python: str) -> dict:
    tmp = tempfile.mkdtemp(prefix="rankwise-fuzz-repro-", dir=FAST_TMP)  # libFuzzer exits without atexit
    env = dict(os.environ, OMP_NUM_THREADS="1", FUZZ_TMPDIR=tmp)
    env.pop("FUZZ_KNOWN", None)
    try:
        proc = subprocess.run(
            [python, str(HERE / f"fuzz_{name}.py"), str(artifact)],
            cwd=HERE.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = proc.stdout + proc.stderr
    found = _FINDING.search(out)
    if found:
        record = json.loads(found.group(1))
        return {key: record[key] for key in ("type", "kind", "message", "raised_at", "innermost_frame")}
    if proc.returncode == 0:
        return {"kind": "passes"}
    uncaught = _UNCAUGHT.search(out)
    return {"kind": f"rc {proc.returncode}", "message": uncaught.group(1) if uncaught else out[-300:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="write the outcome into fuzz/results.json")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    results_path = HERE / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    version = source_version()
    checked = []
    for folder in sorted((HERE / "artifacts").glob("*")):
        for artifact in sorted(folder.iterdir()):
            now = reproduce(folder.name, artifact, args.python)
            print(
                f"{folder.name}/{artifact.name}: {now.get('type', '')} {now['kind']} "
                f"{now.get('raised_at') or ''} {now.get('message', '')[:160]}",
                flush=True,
            )
            rel = str(artifact.relative_to(HERE.parent))
            for finding in results.get(folder.name, {}).get("findings", []):
                if finding.get("artifact") == rel:
                    finding["now"] = now
                    checked.append(finding)
    if source_version() != version:  # the library changed while the inputs ran
        version = f"{version} .. {source_version()} (changed during the check)"
    for finding in checked:
        finding["checked_at"] = version
    if args.update:
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"checked at {version}")


if __name__ == "__main__":
    main()
