"""Finding modules by name or type, planning per-layer configs, and swapping modules in place;
shared by every family."""

from .compressed import CompressedLinear, LowRankLinear, is_linear
from .plan import PlanConfig, block_index, make_plan, pattern_value, target_paths
from .replace import get_module, replace_module
from .targets import find_targets, is_linear_like, layer_kind, linear_names
from .wrapper import Wrapper, check_untied, wrappers

__all__ = [
    "CompressedLinear", "LowRankLinear", "PlanConfig", "Wrapper", "block_index", "check_untied",
    "find_targets", "get_module", "is_linear", "is_linear_like", "layer_kind", "linear_names", "make_plan",
    "pattern_value", "replace_module", "target_paths", "wrappers",
]
