"""Training checkpoints: safetensors + JSON only, committed atomically, verified before use.

Layout of one checkpoint, <output_dir>/checkpoints/step-000050/:
    adapter/adapter.safetensors, adapter.json   the adapter (save_adapter; loadable on its own), or
    model.safetensors                           the whole model's tensors, for a model trained whole
                                                (rankwise.train.trainee says which and how)
    optimizer.safetensors                       every optimizer state tensor, "state.<param index>.<name>"
    rng.safetensors                             torch CPU/CUDA generators: "rank<r>.torch", "rank<r>.cuda<i>"
    trainer_state.json                          step, data position, scheduler, optimizer param groups and
                                                non-tensor state, Python/NumPy RNG per rank, run fingerprint
    manifest.json                               written last: the step and every file's size and sha256

The whole folder is written under a temporary name and renamed into place (rankwise.io.atomic), so a
crash mid-save leaves no folder at the final name; the manifest check also catches folders damaged
after the fact (bad copy, full disk). Old checkpoints are deleted only after the new one is committed.
Checkpoints are taken at optimizer-step boundaries only, so no half-accumulated gradient is ever lost.
"""

from __future__ import annotations

import random
import re
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import AdapterFileError
from ..io.readers import load_tensors, read_json, sha256_file

FORMAT = "rankwise-checkpoint/1"
REQUIRED_FILES = {"trainer_state.json", "optimizer.safetensors", "rng.safetensors"}
WEIGHT_FILES = ("adapter/adapter.safetensors", "model.safetensors")  # a checkpoint holds at least one
_STEP_DIR = re.compile(r"step-(\d+)")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


# --- optimizer and RNG state as tensors + JSON ---------------------------------------------------------
def flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into named tensors and a JSON-able rest."""
    tensors, rest = {}, {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                rest.setdefault(str(index), {})[key] = value
    return tensors, {"state": rest, "param_groups": state_dict["param_groups"]}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entries in rest["state"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": rest["param_groups"]}


def capture_rng(rank: int) -> tuple[dict[str, torch.Tensor], dict]:
    """This process's generator states: tensors for torch, JSON for Python's and NumPy's."""
    tensors = {f"rank{rank}.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rank{rank}.cuda{i}"] = state
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    rest = {"python": [version, list(mt), gauss], "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    return tensors, rest


def restore_rng(rank: int, tensors: dict[str, torch.Tensor], rest: dict) -> None:
    """Put this process's generators back; a missing state is an error, never a silent reseed."""
    if f"rank{rank}.torch" not in tensors:
        raise AdapterFileError(f"the checkpoint has no RNG state for process {rank}; resume with the "
                               "number of processes it was saved with.")
    torch.set_rng_state(tensors[f"rank{rank}.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith(f"rank{rank}.cuda")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    version, mt, gauss = rest["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = rest["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# --- writing -----------------------------------------------------------------------------------------------
def write_checkpoint(save_weights, output_dir: str | Path, step: int, optimizer_state: dict,
                     rng: list[tuple[dict, dict]], trainer_state: dict) -> Path:
    """Commit one checkpoint folder (main process only). `save_weights(folder)` writes the trained
    tensors (a trainee's save); `rng` holds one (tensors, rest) per process."""
    from ..io.atomic import atomic_directory, save_tensors, write_json

    target = checkpoint_root(output_dir) / f"step-{step:06d}"
    _keep_if_damaged(target)
    opt_tensors, opt_rest = flatten_optimizer(optimizer_state)
    rng_tensors = {k: v for tensors, _ in rng for k, v in tensors.items()}
    state = dict(trainer_state, step=step, optimizer=opt_rest, rng=[rest for _, rest in rng])
    with atomic_directory(target) as tmp:
        tmp = Path(tmp)
        save_weights(tmp)
        save_tensors(tmp / "optimizer.safetensors", opt_tensors, {"format": FORMAT})
        save_tensors(tmp / "rng.safetensors", rng_tensors, {"format": FORMAT})
        write_json(tmp / "trainer_state.json", state)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {"format": FORMAT, "step": step, "files": {
            str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files}}
        write_json(tmp / "manifest.json", manifest)  # last: its presence means every file above is complete
    return target


def _keep_if_damaged(path: Path) -> None:
    """A damaged checkpoint may still hold intact files worth recovering: move it aside, never over it."""
    if not path.exists():
        return
    try:
        verify_checkpoint(path)
    except AdapterFileError as err:
        kept = path.with_name(f"{path.name}.damaged-{secrets.token_hex(3)}")
        path.rename(kept)
        warnings.warn(f"kept a damaged checkpoint as {kept} instead of writing over it: {err}", stacklevel=3)


def rotate_checkpoints(output_dir: str | Path, keep: int | None) -> None:
    """Delete the oldest complete, intact checkpoints beyond `keep`; call only after a new one is
    committed. A damaged one is never deleted (it may hold files worth recovering by hand)."""
    if keep is None:
        return
    for path in list_checkpoints(output_dir)[:-keep]:
        try:
            verify_checkpoint(path)
        except AdapterFileError:
            continue
        # Renamed first, so a kill mid-delete leaves a hidden leftover (removed next time), never a
        # step folder without its manifest.
        doomed = path.with_name(f".{path.name}.deleting")
        path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    for leftover in checkpoint_root(output_dir).glob(".step-*.deleting"):
        shutil.rmtree(leftover, ignore_errors=True)


# --- reading -----------------------------------------------------------------------------------------------
def verify_checkpoint(path: str | Path) -> dict:
    """The manifest of a complete, undamaged checkpoint; AdapterFileError otherwise."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise AdapterFileError(f"{path} has no manifest.json: the checkpoint is incomplete (interrupted "
                               "save?); resume from an earlier one or with resume=latest.")
    manifest = read_json(manifest_path)
    files = manifest.get("files")
    if not isinstance(files, dict) or not REQUIRED_FILES <= set(files) or not set(WEIGHT_FILES) & set(files):
        raise AdapterFileError(f"{manifest_path} does not list {sorted(REQUIRED_FILES)} and one of "
                               f"{list(WEIGHT_FILES)}; the checkpoint is damaged.")
    for rel, entry in files.items():
        well_formed = (isinstance(entry, dict) and isinstance(entry.get("bytes"), int)
                       and isinstance(entry.get("sha256"), str) and not Path(rel).is_absolute()
                       and ".." not in Path(rel).parts and len(rel.encode()) < 1024)
        if not well_formed:
            raise AdapterFileError(f"{manifest_path}: the entry for {rel!r} is malformed; the checkpoint is "
                                   "damaged, resume from another one.")
        file = path / rel
        try:
            intact = (file.is_file() and file.stat().st_size == entry["bytes"]
                      and sha256_file(file) == entry["sha256"])
        except OSError:
            intact = False
        if not intact:
            raise AdapterFileError(f"{file} is missing or differs from what the manifest recorded; "
                                   "the checkpoint is damaged, resume from another one.")
    return manifest


def step_folders(output_dir: str | Path) -> list[Path]:
    """Every step-* folder under output_dir, complete or not, oldest first."""
    root = checkpoint_root(output_dir)
    found = [(int(match.group(1)), path) for path in (root.iterdir() if root.is_dir() else [])
             if path.is_dir() and (match := _STEP_DIR.fullmatch(path.name))]
    return [path for _, path in sorted(found)]


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under output_dir, oldest first; incomplete ones are reported and skipped."""
    found = []
    for path in step_folders(output_dir):
        if (path / "manifest.json").is_file():
            found.append(path)
        else:
            warnings.warn(f"skipping incomplete checkpoint {path} (no manifest.json)", stacklevel=2)
    return found


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """The checkpoint folder `resume` names: "latest" (None when there is none yet) or a path.

    "latest" is the newest checkpoint that verifies. If checkpoints exist but none verifies, that is
    an error listing what is wrong with each: starting over would overwrite them, and they may hold
    intact adapter and optimizer files worth recovering by hand.
    """
    if resume == "latest":
        problems = []
        for path in reversed(step_folders(output_dir)):
            try:
                verify_checkpoint(path)
                return path
            except AdapterFileError as err:
                kind = "damaged" if (path / "manifest.json").is_file() else "incomplete"
                warnings.warn(f"skipping {kind} checkpoint: {err}", stacklevel=2)
                problems.append(str(err))
        if problems:
            raise AdapterFileError(
                f"resume=latest: every checkpoint in {checkpoint_root(output_dir)} is damaged; "
                + " | ".join(problems) + ". Nothing was deleted: repair or move them, or resume from a "
                "checkpoint path, or start fresh in another output_dir.")
        return None
    path = Path(resume)
    if not path.is_dir():
        raise AdapterFileError(f"resume={resume!r}: no such checkpoint folder; "
                               "use latest or a step-* folder.")
    verify_checkpoint(path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Everything needed to continue: trainer state, flat tensors, and "weights": {file: its tensors} for
    the weight files the checkpoint holds (the adapter's by module path, or the whole model's)."""
    path = Path(path)
    verify_checkpoint(path)
    state = read_json(path / "trainer_state.json")
    optimizer_tensors = load_tensors(path / "optimizer.safetensors")[0]
    kinds = {"step": int, "optimizer": dict, "scheduler": dict, "rng": list, "fingerprint": dict}
    wrong = [key for key, kind in kinds.items() if not isinstance(state.get(key), kind)]
    if not wrong and not (isinstance(state["fingerprint"].get("settings"), dict) and all(
            key in state["fingerprint"] for key in ("world_size", "examples", "data_sha256"))):
        wrong = ["fingerprint"]
    if not wrong and not all(isinstance(r, dict) and {"python", "numpy"} <= set(r) for r in state["rng"]):
        wrong = ["rng"]
    try:
        if wrong:
            raise ValueError(f"{wrong} missing or of the wrong type")
        state["optimizer"] = unflatten_optimizer(optimizer_tensors, state["optimizer"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        # A checksum-valid file this rankwise did not write: its structure is checked as it is read.
        raise AdapterFileError(f"{path / 'trainer_state.json'} is not a rankwise checkpoint's state "
                               f"({type(err).__name__}: {err}); resume from another checkpoint.") from None
    state["rng_tensors"] = load_tensors(path / "rng.safetensors")[0]
    state["weights"] = {file: load_tensors(path / file)[0] for file in WEIGHT_FILES
                        if (path / file).is_file()}
    return state
