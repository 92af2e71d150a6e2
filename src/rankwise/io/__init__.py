"""File formats (safetensors + JSON plans, PEFT import/export) and atomic writes shared by all savers.

io sits below the families: it reaches them through rankwise._registry.FAMILIES and never imports one.
"""

from .adapter_file import load_adapter, read_adapter, save_adapter
from .atomic import atomic_directory, atomic_path, save_tensors, write_json
from .fingerprint import model_fingerprint
from .model_folder import save_model
from .readers import check_state, load_tensors, read_json

__all__ = [
    "save_adapter", "load_adapter", "read_adapter", "save_model", "model_fingerprint", "check_state",
    "atomic_path", "atomic_directory", "save_tensors", "write_json", "load_tensors", "read_json",
]
