"""Kill trials: SIGKILL `rankwise finetune` at random moments, resume with resume=latest, check the result.

Each trial is one SIGKILL of a running `rankwise finetune` (tiny-llama, iso-dates, a checkpoint every
step). Kills are aimed at three phases and then classified from what the killed process left behind:

    step              between checkpoints: forward/backward/optimizer step (no temporary left)
    checkpoint write  a `checkpoints/.step-NNNNNN.tmp-<pid>-*` folder of the killed pid is left behind
    final save        an `<output_dir>/.adapter.tmp-<pid>-*` folder of the killed pid is left behind
    other             start-up (imports, model load, base eval), checkpoint rotation, final eval, plot

Aiming: a "step" kill waits until the child has (re)started its log.jsonl (training has begun) and
then a random delay within the remaining training window measured on the reference run; a
"checkpoint write" kill polls the filesystem and fires when the child's k-th temporary checkpoint
folder appears (plus, half the time, a random delay within the measured write time); a "final save"
kill fires when the child's `.adapter.tmp-*` folder appears (same optional delay). After each kill the
run is resumed with the same settings plus resume=latest; the resume may itself be killed. A chain of
attempts ends when an attempt runs to completion.

Checks:
  (a) before every resume, rankwise.train.resolve_resume("latest", out) is computed here and the folder
      it picks is verified with rankwise.train.verify_checkpoint (manifest present, every file's size and
      sha256). The folder is also compared with the uninterrupted run's checkpoint of the same step
      (manifest equal: every file byte-identical), and the completing attempt's results.json
      "resumed_from" must name the same folder.
  (b) the final <out>/adapter/adapter.safetensors equals the uninterrupted reference run's: every tensor
      with torch.equal (same names, dtypes, shapes), and the file bytes; log.jsonl records are compared too.

References per method: `ref` (identical settings, uninterrupted) and `ref_all` (save_total_limit=null,
which is a resumable setting outside the run fingerprint) that keeps every step's checkpoint.

The library is edited while the trials run, so src/rankwise is copied into the work dir at start and
every run (children via PYTHONPATH, this script's own checks) uses that snapshot; --live uses src/.

    python bench/kill_trials.py [--trials 20] [--seed 0] [--extra-methods lift,sara] [--extra-trials 6]
                                [--workdir DIR] [--keep] [--live] [--out bench/results/kill_trials.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
# rankwise is imported from a snapshot of src/ taken at start (see _use_snapshot): the library is edited
# while the trials run, and every run of one trial set must use the same code.
rankwise = AdapterFileError = resolve_resume = verify_checkpoint = None


def _use_snapshot(work: Path, live: bool) -> dict:
    """Copy src/rankwise into the work dir and import it from there; children get it via PYTHONPATH."""
    global rankwise, AdapterFileError, resolve_resume, verify_checkpoint
    import hashlib
    import importlib

    src = ROOT / "src"
    if not live:
        snap = work / "src-snapshot"
        shutil.rmtree(snap, ignore_errors=True)
        shutil.copytree(src / "rankwise", snap / "rankwise", ignore=shutil.ignore_patterns("__pycache__"))
        src = snap
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(snap), os.environ.get("PYTHONPATH")]))
        sys.path.insert(0, str(snap))
    digest = hashlib.sha256()
    for path in sorted((src / "rankwise").rglob("*.py")):
        digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    rankwise = importlib.import_module("rankwise")
    AdapterFileError = importlib.import_module("rankwise.errors").AdapterFileError
    train_mod = importlib.import_module("rankwise.train")
    resolve_resume, verify_checkpoint = train_mod.resolve_resume, train_mod.verify_checkpoint
    if not Path(rankwise.__file__).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"imported rankwise from {rankwise.__file__}, not from {src}")
    return {"library": str(src / "rankwise"), "snapshot": not live, "py_files_sha256": digest.hexdigest()}

RANKWISE = Path(sys.executable).with_name("rankwise")

COMMON = {
    "model": "tiny-llama", "task": "iso-dates", "max_steps": 12, "save_every": 1, "save_total_limit": 3,
    "per_device_train_batch_size": 2, "max_length": 96, "eval_size": 2, "eval_batch_size": 2,
    "max_new_tokens": 2, "progress": "false", "seed": 0,
}
METHODS = {
    "lora": {"method": "lora", "rank": 4},
    "lift": {"method": "lift", "rank": 4, "method_config.refresh_every": 1},
    "sara": {"method": "sara", "method_config.progressive_step": 5, "method_config.nuclear_min_side": 0},
}
PHASES = ("step", "checkpoint write", "final save", "other")
POLL_S = 0.0003
CHILD_TIMEOUT_S = 300


def cli_args(method: str, out: Path, **extra) -> list[str]:
    settings = {**COMMON, **METHODS[method], **extra, "output_dir": str(out)}
    return [f"{k}={v}" for k, v in settings.items()]


def _pid_of_temp(name: str) -> int | None:
    # .<target>.tmp-<pid>-<hex> / .<target>.old-<pid>-<hex>
    for kind in (".tmp-", ".old-"):
        if kind in name:
            try:
                return int(name.rsplit(kind, 1)[1].split("-")[0])
            except ValueError:
                return None
    return None


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _log_records(path: Path) -> tuple[list[dict], bool]:
    """Valid step records of log.jsonl and whether its last line is torn."""
    if not path.is_file():
        return [], False
    records, torn = [], False
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
            if isinstance(rec, dict) and isinstance(rec.get("step"), int):
                records.append(rec)
                continue
        except ValueError:
            pass
        torn = torn or i == len(lines) - 1
    return records, torn


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def checkpoint_survey(out: Path) -> dict:
    """Every step-* folder with its verify status; the choice of resolve_resume('latest')."""
    root = out / "checkpoints"
    folders = {}
    for name in sorted(_listdir(root)):
        if not (name.startswith("step-") and (root / name).is_dir()):
            continue
        try:
            verify_checkpoint(root / name)
            folders[name] = "complete"
        except AdapterFileError:
            folders[name] = "damaged" if (root / name / "manifest.json").is_file() else "incomplete"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            chosen, error = resolve_resume("latest", out), None
        except AdapterFileError as err:
            chosen, error = None, str(err)
    return {"folders": folders, "latest": chosen, "resolve_error": error,
            "resolve_warnings": [str(w.message)[:200] for w in caught]}


def run_attempt(out: Path, args: list[str], trigger: dict | None, logs: Path, tag: str) -> dict:
    """Run one `rankwise finetune`; SIGKILL it when `trigger` fires. Returns what was observed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    log_path, ckpt_root = out / "log.jsonl", out / "checkpoints"
    launch_ns = time.time_ns()
    t0 = time.monotonic()
    with open(logs / f"{tag}.stdout", "wb") as so, open(logs / f"{tag}.stderr", "wb") as se:
        child = subprocess.Popen([str(RANKWISE), "finetune", *args], env=env, stdout=so, stderr=se,
                                 cwd=str(out.parent))
    pid = child.pid
    events: dict[str, float] = {}
    ckpt_tmps: list[str] = []  # this child's temporary checkpoint folders, in order of appearance
    started_at = deadline = log_lines_at_start = None
    killed = False
    kill_view: dict = {}

    def note(key: str, now: float) -> None:
        events.setdefault(key, round(now - t0, 4))

    while True:
        if child.poll() is not None:
            break
        now = time.monotonic()
        if started_at is None:
            try:
                if os.stat(log_path).st_mtime_ns >= launch_ns:
                    started_at = now
                    note("training started (log.jsonl written)", now)
                    # train() rewrites log.jsonl with the records up to the step it resumed from
                    # (read 5 ms later: the truncate and the write are two system calls)
                    time.sleep(0.005)
                    log_lines_at_start = _count_lines(log_path)
            except FileNotFoundError:
                pass
        for name in _listdir(ckpt_root):
            if name.startswith(".step-") and ".tmp-" in name and _pid_of_temp(name) == pid:
                if name not in ckpt_tmps:
                    ckpt_tmps.append(name)
                    note(f"tmp {name.split('.tmp-')[0]}", now)
            elif name.startswith("step-"):
                note(name, now)
        adapter_tmp = [n for n in _listdir(out) if n.startswith(".adapter.tmp-") and _pid_of_temp(n) == pid]
        if adapter_tmp:
            note("tmp .adapter", now)
        elif "tmp .adapter" in events and (out / "adapter").is_dir():
            note("adapter", now)
        if trigger and deadline is None:
            kind = trigger["aim"]
            if kind == "step" and started_at is not None:
                deadline = started_at + trigger["delay_s"]
            elif kind == "checkpoint write" and len(ckpt_tmps) >= trigger["nth"]:
                deadline = now + trigger["delay_s"]
            elif kind == "final save" and adapter_tmp:
                deadline = now + trigger["delay_s"]
            elif kind == "after final save" and not adapter_tmp and \
                    _mtime_ns(out / "adapter" / "adapter.safetensors") >= launch_ns:
                deadline = now + trigger["delay_s"]
        if deadline is not None and now >= deadline:
            os.kill(pid, signal.SIGKILL)
            killed = True
            kill_view = {"t_s": round(now - t0, 4), "log_lines_seen": _count_lines(log_path),
                         "temps_seen": sorted(n for n in _listdir(ckpt_root) + _listdir(out)
                                              if _pid_of_temp(n) == pid)}
            break
        time.sleep(POLL_S)
    try:
        rc = child.wait(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        rc = child.wait()
    note("exit", time.monotonic())
    return {"pid": pid, "rc": rc, "killed": killed, "kill": kill_view, "events": events,
            "started": started_at is not None or _mtime_ns(log_path) >= launch_ns, "launch_ns": launch_ns,
            "log_lines_at_start": log_lines_at_start}


def _mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return -1


def _files_in(root: Path, names: list[str]) -> str:
    """The files inside left-behind temporary folders (shows how far the interrupted write got)."""
    files = []
    for name in names:
        if (root / name).is_dir():
            files += sorted(str(p.relative_to(root / name)) for p in (root / name).rglob("*") if p.is_file())
    return ", ".join(files) or "nothing"


def classify(out: Path, attempt: dict, before: dict, after: dict, max_steps: int) -> tuple[str, str]:
    """(phase, detail) of a kill, from what the killed process left behind."""
    pid = attempt["pid"]
    left_out = [n for n in _listdir(out) if _pid_of_temp(n) == pid]
    left_ckpt = [n for n in _listdir(out / "checkpoints") if _pid_of_temp(n) == pid]
    if any(n.startswith(".adapter.") for n in left_out):
        return "final save", f"left {', '.join(left_out)} holding [{_files_in(out, left_out)}]"
    if any(n.startswith(".step-") for n in left_ckpt):
        return "checkpoint write", (f"left checkpoints/{', '.join(left_ckpt)} holding "
                                    f"[{_files_in(out / 'checkpoints', left_ckpt)}]")
    if left_out or left_ckpt:
        return "other", f"left {', '.join(left_out + left_ckpt)}"
    newly_bad = [n for n, s in after["folders"].items() if s != "complete" and before["folders"].get(n) != s]
    if newly_bad:
        return "other", f"checkpoint rotation (left {', '.join(newly_bad)} {after['folders'][newly_bad[0]]})"
    if not attempt["started"]:
        return "other", "start-up (imports, model load, base evaluation)"
    latest = after["latest"]
    latest_step = int(latest.name.split("-")[1]) if latest is not None else 0
    if latest_step < max_steps:
        return "step", (f"training, after checkpoint {latest_step}" if latest_step
                         else "training, before the first checkpoint")
    if _mtime_ns(out / "adapter" / "adapter.safetensors") >= attempt["launch_ns"]:
        return "other", "after the final save (plot, results.json)"
    return "other", "after training, before the final save (final evaluation)"


def compare_adapters(path: Path, ref: Path) -> dict:
    mine, theirs = load_file(str(path)), load_file(str(ref))
    names_equal = sorted(mine) == sorted(theirs)
    unequal = [k for k in sorted(set(mine) & set(theirs))
               if mine[k].dtype != theirs[k].dtype or mine[k].shape != theirs[k].shape
               or not torch.equal(mine[k], theirs[k])]
    return {"tensors": len(mine), "names_equal": names_equal, "unequal_tensors": unequal[:20],
            "tensors_bitwise_equal": names_equal and not unequal,
            "bytes_equal": path.read_bytes() == ref.read_bytes()}


def final_adapter_state(out: Path, attempt: dict, ref_adapter: Path) -> str:
    """What <out>/adapter holds after a kill: absent, or complete (checked against the reference)."""
    path = out / "adapter" / "adapter.safetensors"
    if not (out / "adapter").exists():
        return "absent"
    if not path.is_file():
        return "TORN: adapter/ exists without adapter.safetensors"
    try:
        same = compare_adapters(path, ref_adapter)["tensors_bitwise_equal"]
    except Exception as err:  # noqa: BLE001 - a torn file is exactly what this looks for
        return f"TORN: unreadable ({err})"
    who = "the killed process" if _mtime_ns(path) >= attempt["launch_ns"] else "an earlier attempt"
    verdict = "equal to the reference" if same else "DIFFERS from the reference"
    return f"complete, written by {who}, {verdict}"


def manifest_of(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def timeline(events: dict, max_steps: int) -> dict:
    """Step time, checkpoint write time and final-save time from a reference run's events."""
    starts = [events.get(f"tmp .step-{s:06d}") for s in range(1, max_steps + 1)]
    ends = [events.get(f"step-{s:06d}") for s in range(1, max_steps + 1)]
    writes = [e - s for s, e in zip(starts, ends) if s is not None and e is not None]
    gaps = [b - a for a, b in zip(ends, ends[1:]) if a is not None and b is not None]
    final = None
    if "tmp .adapter" in events and "adapter" in events:
        final = events["adapter"] - events["tmp .adapter"]
    return {"step_s": statistics.median(gaps), "checkpoint_write_s": statistics.median(writes),
            "final_save_s": final if final and final > 0 else 0.015, "events": events}


def run_method(method: str, n_kills: int, rng: random.Random, work: Path, verbose: bool) -> dict:
    max_steps = COMMON["max_steps"]
    mdir = work / method
    logs = mdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        if verbose:
            print(f"[{method}] {msg}", flush=True)

    # --- references ----------------------------------------------------------------------------------
    ref, ref_all = mdir / "ref", mdir / "ref_all"
    r1 = run_attempt(ref, cli_args(method, ref), None, logs, "ref")
    r2 = run_attempt(ref_all, cli_args(method, ref_all, save_total_limit="null"), None, logs, "ref_all")
    if r1["rc"] or r2["rc"]:
        raise SystemExit(f"{method}: reference run failed (rc {r1['rc']}, {r2['rc']}); see {logs}")
    cal = timeline(r1["events"], max_steps)
    ref_adapter = ref / "adapter" / "adapter.safetensors"
    ref_log, _ = _log_records(ref / "log.jsonl")
    ref_vs_all = compare_adapters(ref_all / "adapter" / "adapter.safetensors", ref_adapter)
    say(f"references done: step {cal['step_s']:.3f}s, checkpoint write {cal['checkpoint_write_s']:.3f}s")

    # --- kill chains -------------------------------------------------------------------------------------
    trials, chains = [], []
    counts = dict.fromkeys(PHASES, 0)
    chain_no = 0
    max_kills = n_kills + 12  # room to top up a phase that got fewer than 2 kills
    while True:
        deficit = [p for p in PHASES[:3] if counts[p] < 2]
        kills = sum(counts.values())
        if kills >= n_kills and not deficit:
            break
        if kills >= max_kills:
            break
        chain_no += 1
        out = mdir / f"chain-{chain_no:02d}"
        planned = rng.randint(1, 4)
        chain = {"chain": chain_no, "output_dir": str(out), "attempts": []}
        kills_in_chain = 0
        attempt_no = 0
        while True:
            attempt_no += 1
            before = checkpoint_survey(out)
            resume = attempt_no > 1
            latest = before["latest"]
            latest_step = int(latest.name.split("-")[1]) if latest is not None else 0
            pre = None
            if resume:
                pre = {"resolve_resume_latest": latest and str(latest.relative_to(out)),
                       "resolve_error": before["resolve_error"], "folders": before["folders"],
                       "warnings": before["resolve_warnings"]}
                if latest is not None:
                    try:
                        manifest = verify_checkpoint(latest)
                        pre["verify_checkpoint"] = "ok"
                        state = json.loads((latest / "trainer_state.json").read_text())
                        pre["step"] = manifest["step"]
                        pre["step_consistent"] = (manifest["step"] == state["step"] == latest_step)
                        ref_manifest = manifest_of(ref_all / "checkpoints" / latest.name)
                        pre["equals_uninterrupted_checkpoint"] = ref_manifest == manifest
                        if ref_manifest != manifest:
                            theirs = (ref_manifest or {}).get("files", {})
                            pre["files_differing_from_uninterrupted"] = sorted(
                                k for k in set(manifest["files"]) | set(theirs)
                                if manifest["files"].get(k) != theirs.get(k))
                    except AdapterFileError as err:
                        pre["verify_checkpoint"] = f"FAILED: {err}"
                else:
                    pre["verify_checkpoint"] = "no checkpoint yet: starts from step 0"
                    pre["step"] = 0
                    pre["step_consistent"] = True
                    pre["equals_uninterrupted_checkpoint"] = True
            # choose the aim of this attempt's kill
            kills = sum(counts.values())
            need = [p for p in PHASES[:3] if counts[p] < 2]
            want_kill = kills_in_chain < planned and kills < max_kills and (kills < n_kills or need)
            trigger = None
            if want_kill:
                last_of_chain = kills_in_chain == planned - 1
                if latest_step >= max_steps:
                    aim = "final save"
                elif kills >= n_kills - 3 and need:
                    aim = need[0]
                elif last_of_chain:
                    aim = rng.choices(["step", "checkpoint write", "final save"], [0.35, 0.35, 0.3])[0]
                else:
                    aim = rng.choices(["step", "checkpoint write", "after final save"],
                                      [0.45, 0.45, 0.1])[0]
                if aim == "step":
                    window = (max_steps - latest_step) * cal["step_s"]
                    trigger = {"aim": aim, "delay_s": round(rng.uniform(0.0, window), 4)}
                elif aim == "checkpoint write":
                    extra = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.9 * cal["checkpoint_write_s"])
                    trigger = {"aim": aim, "nth": rng.randint(1, min(3, max_steps - latest_step)),
                               "delay_s": round(extra, 4)}
                elif aim == "final save":
                    extra = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.9 * cal["final_save_s"])
                    trigger = {"aim": aim, "delay_s": round(extra, 4)}
                else:  # after the final adapter is in place: plot, results.json; the next save swaps dirs
                    trigger = {"aim": aim, "delay_s": round(rng.uniform(0.0, 0.3), 4)}
            args = cli_args(method, out, **({"resume": "latest"} if resume else {}))
            tag = f"chain{chain_no:02d}-attempt{attempt_no:02d}"
            att = run_attempt(out, args, trigger, logs, tag)
            after = checkpoint_survey(out)
            record = {"attempt": attempt_no, "resume": resume, "pre_resume_check": pre, "aim": trigger,
                      "killed": att["killed"], "rc": att["rc"]}
            if resume and pre is not None:
                record["resumed_from_step"] = pre.get("step")
                # the child's own evidence: train() rewrote log.jsonl with exactly the resumed step's records
                if att["log_lines_at_start"] is not None:
                    record["child_log_restart_step"] = att["log_lines_at_start"]
                    record["child_resumed_from_expected_step"] = att["log_lines_at_start"] == pre.get("step")
            if att["killed"]:
                phase, detail = classify(out, att, before, after, max_steps)
                counts[phase] += 1
                kills_in_chain += 1
                recs, torn = _log_records(out / "log.jsonl")
                a_latest = after["latest"]
                trial = {"trial": len(trials) + 1, "method": method, "chain": chain_no, "attempt": attempt_no,
                         "aimed_at": trigger["aim"], "trigger": trigger, "phase": phase, "detail": detail,
                         "kill_time_s": att["kill"]["t_s"],
                         "last_completed_step_seen": recs[-1]["step"] if recs else 0,
                         "log_last_line_torn": torn,
                         "latest_complete_checkpoint_after_kill": a_latest and a_latest.name,
                         "temps_at_kill": att["kill"]["temps_seen"],
                         "final_adapter_after_kill": final_adapter_state(out, att, ref_adapter),
                         "next_resume_from": None}
                trials.append(trial)
                record["trial"] = trial["trial"]
                record["phase"] = phase
                say(f"trial {trial['trial']:2d}: aimed {trigger['aim']!r:18} -> {phase!r:18} at "
                    f"{trial['kill_time_s']:.3f}s, last step {trial['last_completed_step_seen']}, "
                    f"latest checkpoint {trial['latest_complete_checkpoint_after_kill']} ({detail})")
            else:
                results_file = out / "results.json"
                res = json.loads(results_file.read_text()) if results_file.is_file() else {}
                record["results_resumed_from"] = res.get("resumed_from")
            stderr = (logs / f"{tag}.stderr").read_text(errors="replace").strip().splitlines()
            record["child_warnings"] = [line[:240] for line in stderr
                                        if any(w in line for w in ("skipping", "torn", "gaps", "Warning"))]
            if att["rc"] not in (0, -signal.SIGKILL):
                record["stderr_tail"] = stderr[-8:]
            chain["attempts"].append(record)
            if len(chain["attempts"]) >= 2:
                prev = chain["attempts"][-2]
                if prev.get("trial"):
                    chosen = (pre or {}).get("resolve_resume_latest")
                    trials[prev["trial"] - 1]["next_resume_from"] = chosen or "nothing (fresh start)"
            if not att["killed"]:
                break
        # --- chain end: compare with the uninterrupted run ------------------------------------------------
        final = chain["attempts"][-1]
        chain["completed"] = final["rc"] == 0
        if chain["completed"]:
            chain["adapter"] = compare_adapters(out / "adapter" / "adapter.safetensors", ref_adapter)
            chain["adapter_json_bytes_equal"] = ((out / "adapter" / "adapter.json").read_bytes()
                                                 == (ref / "adapter" / "adapter.json").read_bytes())
            got_log, _ = _log_records(out / "log.jsonl")
            chain["log_equal"] = got_log == ref_log
            pre = final.get("pre_resume_check") or {}
            expected = pre.get("resolve_resume_latest")
            got = final.get("results_resumed_from")
            chain["results_resumed_from_matches"] = (
                (expected is None and got is None) or (got is not None and expected is not None
                                                       and Path(got) == out / expected))
        chain["leftovers"] = sorted(
            [n for n in _listdir(out) if _pid_of_temp(n) is not None]
            + [f"checkpoints/{n}" for n in _listdir(out / "checkpoints") if _pid_of_temp(n) is not None]
            + [f"checkpoints/{n} ({s})" for n, s in checkpoint_survey(out)["folders"].items()
               if s != "complete"])
        chains.append(chain)
        say(f"chain {chain_no}: {kills_in_chain} kill(s), completed={chain['completed']}, "
            f"adapter tensors equal={chain.get('adapter', {}).get('tensors_bitwise_equal')}, "
            f"bytes equal={chain.get('adapter', {}).get('bytes_equal')}, log equal={chain.get('log_equal')}")

    resumes = [a for c in chains for a in c["attempts"] if a["resume"]]
    all_from_complete = all(
        a["pre_resume_check"]["resolve_error"] is None
        and (a["pre_resume_check"]["verify_checkpoint"] == "ok"
             or a["pre_resume_check"]["verify_checkpoint"].startswith("no checkpoint"))
        and a["pre_resume_check"]["step_consistent"] for a in resumes)
    completed = [c for c in chains if c["completed"]]
    return {
        "method": method, "settings": METHODS[method], "calibration": cal,
        "reference": {"output_dir": str(ref), "adapter_sha256": _sha(ref_adapter),
                      "ref_all_vs_ref_adapter": ref_vs_all},
        "kills": sum(counts.values()), "kills_per_phase": counts, "resumes": len(resumes),
        "chains": chains, "trials": trials,
        "verdicts": {
            "all_resumes_from_complete_checkpoints": all_from_complete,
            "child_logs_agree_on_resume_step": all(
                a.get("child_resumed_from_expected_step", True) for a in resumes),
            "resumes_with_child_log_evidence": sum("child_log_restart_step" in a for a in resumes),
            "all_resumed_checkpoints_equal_uninterrupted": all(
                a["pre_resume_check"].get("equals_uninterrupted_checkpoint") for a in resumes),
            "all_chains_completed": len(completed) == len(chains),
            "results_resumed_from_matches_check": all(
                c.get("results_resumed_from_matches") for c in completed),
            "final_adapter_tensors_bitwise_equal": bool(completed) and len(completed) == len(chains) and all(
                c["adapter"]["tensors_bitwise_equal"] for c in completed),
            "final_adapter_bytes_equal": bool(completed) and len(completed) == len(chains) and all(
                c["adapter"]["bytes_equal"] for c in completed),
            "final_adapter_json_bytes_equal": bool(completed) and all(
                c["adapter_json_bytes_equal"] for c in completed),
            "final_log_equal": bool(completed) and all(c["log_equal"] for c in completed),
            "final_adapter_never_torn_after_a_kill": all(
                t["final_adapter_after_kill"] == "absent"
                or t["final_adapter_after_kill"].endswith("equal to the reference") for t in trials),
        },
    }


def _provenance() -> dict:
    """The commit and the uncommitted library files the trials ran against (others edit concurrently)."""
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted_src": git("status", "--porcelain", "--", "src").splitlines(),
            "src_diff_sha256": __import__("hashlib").sha256(git("diff", "--", "src").encode()).hexdigest()}


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="kills for the main method (lora)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--extra-methods", default="lift,sara",
                        help="comma-separated methods with state-changing hooks ('' for none)")
    parser.add_argument("--extra-trials", type=int, default=6, help="kills per extra method")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (always kept on a failure)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kill_trials.json")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--live", action="store_true",
                        help="run the live src/ tree instead of a snapshot taken at start")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="rankwise-kill-trials-"))
    work.mkdir(parents=True, exist_ok=True)
    library = _use_snapshot(work, args.live)
    rng = random.Random(args.seed)
    started = time.time()
    source_at_start = _provenance()
    plan = [("lora", args.trials)] + [(m, args.extra_trials) for m in args.extra_methods.split(",") if m]
    results = [run_method(method, n, rng, work, not args.quiet) for method, n in plan]

    counts = dict.fromkeys(PHASES, 0)
    for r in results:
        for phase, n in r["kills_per_phase"].items():
            counts[phase] += n
    verdicts = {
        "all_resumes_from_complete_checkpoints": all(
            r["verdicts"]["all_resumes_from_complete_checkpoints"] for r in results),
        "all_resumed_checkpoints_equal_uninterrupted": all(
            r["verdicts"]["all_resumed_checkpoints_equal_uninterrupted"] for r in results),
        "child_logs_agree_on_resume_step": all(
            r["verdicts"]["child_logs_agree_on_resume_step"] for r in results),
        "final_adapter_tensors_bitwise_equal": {
            r["method"]: r["verdicts"]["final_adapter_tensors_bitwise_equal"] for r in results},
        "final_adapter_bytes_equal": {
            r["method"]: r["verdicts"]["final_adapter_bytes_equal"] for r in results},
        "final_adapter_json_bytes_equal": {
            r["method"]: r["verdicts"]["final_adapter_json_bytes_equal"] for r in results},
        "final_log_equal": {r["method"]: r["verdicts"]["final_log_equal"] for r in results},
        "final_adapter_never_torn_after_a_kill": all(
            r["verdicts"]["final_adapter_never_torn_after_a_kill"] for r in results),
        "every_phase_at_least_twice": all(counts[p] >= 2 for p in PHASES[:3]),
    }
    report = {
        "what": "SIGKILL `rankwise finetune` at random moments, resume with resume=latest until done; "
                "check resumes start from verified checkpoints and the final adapter equals an "
                "uninterrupted run's",
        "settings": {"common": COMMON, "methods": {m: METHODS[m] for m, _ in plan}, "seed": args.seed,
                     "trials": args.trials, "extra_trials": args.extra_trials,
                     "child_env": {"OMP_NUM_THREADS": "1"}, "poll_interval_s": POLL_S,
                     "rankwise_version": rankwise.__version__, "torch": torch.__version__,
                     "python": platform.python_version(), "platform": platform.platform(),
                     "cpus": os.cpu_count(),
                     "library": library, "source_at_start": source_at_start,
                     "source_at_end": _provenance()},
        "kills_total": sum(counts.values()), "kills_per_phase": counts,
        "kills_per_method_and_phase": {r["method"]: r["kills_per_phase"] for r in results},
        "verdicts": verdicts,
        "wall_s": round(time.time() - started, 1),
        "methods": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({"kills_total": report["kills_total"], "kills_per_phase": counts,
                      "kills_per_method_and_phase": report["kills_per_method_and_phase"],
                      "verdicts": verdicts, "wall_s": report["wall_s"]}, indent=2))
    print(f"wrote {args.out}")
    ok = all(all(v.values()) if isinstance(v, dict) else v for v in verdicts.values())
    if args.keep or not ok:
        print(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
