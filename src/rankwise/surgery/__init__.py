"""Finding modules by name or type, and swapping them in place; shared by every family."""

from .targets import find_targets, linear_names
from .replace import get_module, replace_module

__all__ = ["find_targets", "linear_names", "get_module", "replace_module"]
