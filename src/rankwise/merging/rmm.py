"""RMM, "Towards Reversible Model Merging for Low-rank Weights" (Alipour, Mohammadi Amiri, 2025, arXiv
2510.14163): instead of one merged model, keep a basis of k < n low-rank "models" and per-task
coefficients, from which each task's adapter is rebuilt ("reverted") by a linear combination; per layer
and per factor position, the n tasks' r-vectors X ≈ P C by truncated SVD (rankwise.linalg.rmm has the
formulas and the choices the paper's summary leaves open). k = n is exact.

A basis folder (safetensors + JSON, written atomically):
    rmm.json           format, the inputs in order, k, shared, and per layer the factor shapes
    rmm.safetensors    "<layer path>.B_basis" (k, m, r), ".A_basis" (k, r, d), ".C_B", ".C_A"
`revert(model, folder, task)` installs task's rebuilt LoRA on `model`; `rankwise merge BASE --revert TASK
--basis DIR --out ADAPTER` saves it as an adapter folder.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AdapterFileError, ConfigError
from ..io import atomic_directory, load_tensors, read_json, save_tensors, write_json
from ..linalg.rmm import rmm_basis, rmm_revert
from .base import MergeConfig, register, union_paths

FORMAT = "rankwise-rmm/1"
PARTS = ("B_basis", "A_basis", "C_B", "C_A")


@register("rmm", "Towards Reversible Model Merging for Low-rank Weights (RMM)",
          "https://arxiv.org/abs/2510.14163", needs_low_rank=True, result="basis")
def rmm(base, updates, config: MergeConfig):
    """{path: {part: tensor}}: the k-model basis (k = config.rank, default n − 1, at least 1)."""
    k = config.rank if config.rank is not None else max(1, len(updates) - 1)
    result = {}
    for path in union_paths(updates):
        missing = [u.source for u in updates if path not in u.factors]
        if missing:
            raise ConfigError(f"{missing[0]} does not adapt {path}, which another input does; RMM needs "
                              "every input to adapt the same layers at the same rank.")
        (B_basis, A_basis), (C_B, C_A) = rmm_basis([u.factors[path] for u in updates], k,
                                                   shared=bool(config.options.get("shared", False)))
        result[path] = dict(zip(PARTS, (B_basis, A_basis, C_B, C_A)))
    return result


def save_basis(folder: str | Path, result: dict, inputs: list[str], k: int) -> Path:
    tensors = {f"{path}.{part}": value.contiguous() for path, parts in result.items()
               for part, value in parts.items()}
    with atomic_directory(folder) as tmp:
        save_tensors(Path(tmp) / "rmm.safetensors", tensors, {"format": FORMAT})
        write_json(Path(tmp) / "rmm.json", {"format": FORMAT, "inputs": inputs, "k": k,
                                            "layers": sorted(result)})
    return Path(folder)


def task_index(meta: dict, task: str | int, source: Path) -> int:
    """0-based index of `task`: a 1-based number, or an input folder as given to the merge (or its name)."""
    inputs = meta["inputs"]
    if isinstance(task, int) or str(task).isdigit():
        number = int(task)
        if 1 <= number <= len(inputs):
            return number - 1
    matches = [i for i, s in enumerate(inputs) if str(task) in (s, Path(s).name)]
    if len(matches) == 1:
        return matches[0]
    raise ConfigError(f"{source}: no task {task!r}; give 1..{len(inputs)} or one of {inputs}.")


def revert(model, folder: str | Path, task: str | int, name: str = "reverted") -> dict:
    """Install task's adapter, rebuilt from the basis in `folder`, on `model` as the LoRA `name`."""
    from .api import install_factors

    folder = Path(folder)
    if not (folder / "rmm.json").is_file():
        raise AdapterFileError(f"{folder} holds no rmm.json; point --basis at the folder `rankwise merge "
                               "--method rmm` wrote.")
    meta = read_json(folder / "rmm.json")
    if meta.get("format") != FORMAT or not isinstance(meta.get("inputs"), list):
        raise AdapterFileError(f"{folder / 'rmm.json'} is not an RMM basis ({FORMAT}); point --basis at the "
                               "folder `rankwise merge --method rmm` wrote.")
    index = task_index(meta, task, folder)
    tensors, _ = load_tensors(folder / "rmm.safetensors")
    factors = {}
    for path in meta["layers"]:
        try:
            parts = [tensors[f"{path}.{part}"] for part in PARTS]
        except KeyError as err:
            raise AdapterFileError(f"{folder / 'rmm.safetensors'} lacks {err}; the basis is damaged, "
                                   "merge again.") from None
        factors[path] = rmm_revert((parts[0], parts[1]), (parts[2], parts[3]), index)
    install_factors(model, factors, name)
    return {"task": meta["inputs"][index], "layers": len(factors)}
