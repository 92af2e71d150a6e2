"""What a training run holds in memory, measured from its tensors, beside the analytic expectation.

    report = memory_report(model, optimizer)     # after at least one optimizer step
    print(format_memory(report))

Measured, each tensor counted once (tied weights share one Parameter; shared storage is not
de-duplicated further):
    weights      every parameter and every persistent buffer (not e.g. Llama's rotary inv_freq)
    gradients    every parameter's .grad that is set (None after zero_grad(set_to_none=True))
    optimizer    every tensor in optimizer.state, by kind: `moments` (Adam's exp_avg, exp_avg_sq,
                 max_exp_avg_sq; SGD's momentum_buffer), `bases` (a projector's state: the d×r `basis`,
                 or dct's r int64 `basis_columns`), `other` (e.g. torch's scalar step tensors)

Expected optimizer state, for every parameter of the optimizer's groups (what it holds once each has had
a gradient, i.e. after one step):
    torch AdamW / Adam   moments 2·numel (3 with amsgrad) in the parameter's dtype; other: one scalar
                         step tensor per parameter (float32; float64 under a float64 default dtype)
    ProjectedAdamW       a projected (m, n) weight at rank r: moments 2·m·r if m >= n, else 2·r·n, in
                         the parameter's dtype; basis d·r floats (d = min(m, n); float32, float64 for
                         float64 weights) or r int64 indices for dct; others 2·numel. Its step is an int.
    ProjectedAdafactor   as ProjectedAdamW, with Adafactor's factored second moment in place of the two
                         moments: a + b for a moment of shape (a, b) (projected or not), numel for 1-D
    GradNormLoRP         as ProjectedAdamW for the direction V, plus, per normalized (m, n) weight: V and
                         the magnitude g (m·n + m, counted as `other`) and g's moments (2·m)
    SGD                  momentum ≠ 0: one buffer of numel; otherwise nothing
Any other optimizer gets no expectation (`expected` is None). Not counted: the DCT projector's shared
d×d matrices (an lru_cache of rankwise.optim.projectors.dct_matrix, one per size, outside any state),
activations, and allocator overhead.
"""

from __future__ import annotations

import torch
from torch import nn

from .gradnorm_lorp import MAGNITUDE_MOMENTS, GradNormLoRP
from .projected import ProjectedAdafactor, ProjectedAdamW
from .projectors import PROJECTORS

MOMENT_KEYS = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "exp_avg_sq_row",
                         "exp_avg_sq_col", *MAGNITUDE_MOMENTS.values()})
BASIS_KEYS = frozenset(key for projector in PROJECTORS.values() for key in projector.state_keys)
KINDS = ("moments", "bases", "other")


def _size(elements: int = 0, nbytes: int = 0) -> dict[str, int]:
    return {"elements": elements, "bytes": nbytes}


def _add(size: dict[str, int], elements: int, itemsize: int) -> None:
    size["elements"] += elements
    size["bytes"] += elements * itemsize


def _measure(tensors) -> dict[str, int]:
    size = _size()
    for tensor in tensors:
        _add(size, tensor.numel(), tensor.element_size())
    return size


def _persistent_buffers(model: nn.Module):
    for module in model.modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in module._non_persistent_buffers_set:
                yield buffer


def _unique(tensors):
    seen: set[int] = set()
    for tensor in tensors:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            yield tensor


def _by_kind(optimizer: torch.optim.Optimizer) -> dict[str, dict[str, int]]:
    sizes = {kind: _size() for kind in KINDS}
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value):
                kind = "moments" if key in MOMENT_KEYS else "bases" if key in BASIS_KEYS else "other"
                _add(sizes[kind], value.numel(), value.element_size())
    return sizes


def _scalar_step_itemsize() -> int:
    # torch's Adam keeps `step` as a 0-d tensor of torch.optim.optimizer._get_scalar_dtype()
    return 8 if torch.get_default_dtype() == torch.float64 else 4


def _moment_elements(optimizer: torch.optim.Optimizer, shape: tuple[int, ...]) -> int:
    """Moment entries for a moment of `shape`: Adafactor's factored row + column, or AdamW's two."""
    if isinstance(optimizer, ProjectedAdafactor):
        return sum(shape) if len(shape) == 2 else torch.Size(shape).numel()
    return 2 * torch.Size(shape).numel()


def _projected_expectation(optimizer, param: torch.Tensor, group: dict, sizes: dict[str, dict[str, int]]):
    (m, n), rank = param.shape, group["rank"]
    moment = (m, rank) if m >= n else (rank, n)
    _add(sizes["moments"], _moment_elements(optimizer, moment), param.element_size())
    if group["projector"] == "dct":
        _add(sizes["bases"], rank, torch.empty((), dtype=torch.int64).element_size())
    else:
        _add(sizes["bases"], min(m, n) * rank, 8 if param.dtype == torch.float64 else 4)


def expected_state(optimizer: torch.optim.Optimizer) -> dict[str, dict[str, int]] | None:
    """The analytic optimizer-state size by kind (see the module docstring), or None for an optimizer
    without a formula here."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    if not isinstance(optimizer, ProjectedAdamW | torch.optim.Adam | torch.optim.AdamW | torch.optim.SGD):
        return None
    sizes = {kind: _size() for kind in KINDS}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if isinstance(optimizer, GradNormLoRP) and optimizer.is_normalized(param, group):
                _add(sizes["other"], param.numel() + param.shape[0], param.element_size())  # V and g
                _add(sizes["moments"], 2 * param.shape[0], param.element_size())  # g's moments
            if isinstance(optimizer, ProjectedAdamW) and optimizer.is_projected(param, group):
                _projected_expectation(optimizer, param, group, sizes)
            elif isinstance(optimizer, torch.optim.SGD):
                _add(sizes["moments"], param.numel() if group["momentum"] else 0, param.element_size())
            elif isinstance(optimizer, ProjectedAdafactor):
                _add(sizes["moments"], _moment_elements(optimizer, tuple(param.shape)), param.element_size())
            else:
                amsgrad = group.get("amsgrad", False)
                _add(sizes["moments"], (3 if amsgrad else 2) * param.numel(), param.element_size())
                if not isinstance(optimizer, ProjectedAdamW):
                    _add(sizes["other"], 1, _scalar_step_itemsize())
    return sizes


def _with_total(sizes: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    total = _size(sum(s["elements"] for s in sizes.values()), sum(s["bytes"] for s in sizes.values()))
    return {**sizes, "total": total}


def memory_report(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """{"weights", "gradients", "optimizer", "expected", "total"}: sizes as {"elements", "bytes"};
    "optimizer" and "expected" by kind (moments, bases, other, total), "expected" also names the
    optimizer class; both None without an optimizer, "expected" None without a formula."""
    params = list(model.parameters())  # de-duplicated: a tied weight is listed once
    weights = _measure(_unique([*params, *_persistent_buffers(model)]))
    gradients = _measure(p.grad for p in params if p.grad is not None)
    measured = expected = None
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper (inside Trainer)
    if optimizer is not None:
        measured = _with_total(_by_kind(optimizer))
        if (analytic := expected_state(optimizer)) is not None:
            expected = {"optimizer_class": type(optimizer).__name__, **_with_total(analytic)}
    state = measured["total"] if measured else _size()
    total = _size(*(weights[k] + gradients[k] + state[k] for k in ("elements", "bytes")))
    return {"weights": weights, "gradients": gradients, "optimizer": measured, "expected": expected,
            "total": total}


def _human(nbytes: int) -> str:
    if nbytes < 1024:
        return f"{nbytes} B"
    value, unit = nbytes / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.2f} {unit}"


def _line(label: str, size: dict[str, int]) -> str:
    return f"{label:<28}{_human(size['bytes']):>11}  ({size['elements']:,} elements)"


def format_memory(report: dict) -> str:
    """Aligned lines for a CLI: weights, gradients, optimizer state and its expectation by kind, total."""
    lines = [_line("weights", report["weights"]), _line("gradients", report["gradients"])]
    expected = report["expected"]
    sections = [("optimizer state", report["optimizer"])]
    if expected is not None:
        sections.append((f"expected ({expected['optimizer_class']})", expected))
    for title, section in sections:
        if section is not None:
            lines.append(_line(title, section["total"]))
            lines += [_line(f"  {kind}", section[kind]) for kind in KINDS if section[kind]["elements"]]
    lines.append(_line("total", report["total"]))
    return "\n".join(lines)
