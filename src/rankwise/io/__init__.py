"""Adapter files (safetensors + JSON), PEFT import/export, and atomic writes shared by all savers."""

from .adapter_file import load_adapter, save_adapter
from .atomic import atomic_directory, atomic_path, save_tensors, write_json
from .fingerprint import model_fingerprint
from .readers import load_tensors, read_json

__all__ = [
    "save_adapter", "load_adapter", "model_fingerprint",
    "atomic_path", "atomic_directory", "save_tensors", "write_json", "load_tensors", "read_json",
]
