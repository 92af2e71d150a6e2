"""Before launch: the peak memory of a compression run (rankwise compress --dry-run), from configs alone.

    print(estimate_compress("tiny-llama", "svd", config).table())

No weights are read: the model is built on the meta device (rankwise.models.meta), the method's
plan is made there and each planned layer's compressed stand-in (Compressor.shape) is built there, so the
counts of what is compressed and of the result are exact. compress() builds every layer before it replaces
any, so the original weights and the whole compressed result are held together. In bytes:

    weights       every parameter and buffer of the model as loaded (float32)
    statistics    calibration methods: per planned layer, in float64 (compress.calibration.LayerStats)
                  inputs: the (in, in) second moment and the (in,) mean |x|; outputs: (out, out) and (out,)
    activations   one calibration forward without gradients over a batch of 4 sequences of seq_len tokens:
                  a block's live tensors, B T (4 h + 3 i) · 4 (residual, normed input, attention output,
                  q/k/v; gate, up and their product), plus one layer's float32 terms (in, in) or (out, out)
    workspace     the largest planned layer's decomposition, k = min(m, n):
                  SVD of an (m, n) matrix (torch.linalg.svd: U, S, Vh and its copy; measured: exact but for
                  ~14 KB of LAPACK workspace) (m n + m k + k + k n)·b
                  with b = 4 (float32: svd, svd-comp, eora, pela, ...) or 8 and two more (m, n) float64
                  copies (asvd, svd-llm: W and W S); afm: eigh of the (out, out) float64 covariance (three
                  copies); rtn, prune, bipft: two dense (m, n) float32 copies of one layer
    result        the stored bytes of every planned layer's compressed form (factors, packed codes)

The peak is the larger of the calibration pass (weights + statistics, + the larger of the activations
during a forward and the statistics' scaled copy made by finish() after the last one) and the build
(weights + statistics + result + workspace). Against the profiler's peak of compress(): svd and asvd
within 2 % on tiny-llama and SmolLM2 (asvd on SmolLM2: 2,507 MiB estimated, 2,517 MiB measured); rtn's
build holds more than its workspace counts (0.10 MiB estimated above the weights, 0.26 MiB measured).

Left out: the process itself, allocator overhead, evaluation (perplexity and exact match: the logits of a
batch), PELA's distillation (a training run of its own), EoRA's quantized copy beside its compensation,
and methods whose plan reads the weights (WeLore's and TRP's ranks come from singular values): those
raise EstimateUnavailable.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from ..models.meta import EstimateUnavailable, meta_causal_lm, read_config, unless_values_needed

__all__ = ["CompressEstimate", "EstimateUnavailable", "decomposition_bytes", "estimate_compress",
           "svd_bytes"]

CALIBRATION_BATCH = 4  # sequences per calibration batch, as rankwise.cli.compress makes them
FLOAT64_SVD = ("asvd", "svd-llm")
DENSE_COPY = ("rtn", "prune", "bipft")


@dataclasses.dataclass
class CompressEstimate:
    """Bytes of each part of a compression run's peak memory."""

    method: str
    weights: int
    statistics: int
    activations: int
    workspace: int
    result: int
    layers: int
    largest_layer: tuple[int, int]
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        calibrating = self.weights + self.statistics + max(self.activations, self.statistics)
        return max(calibrating, self.weights + self.statistics + self.result + self.workspace)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "total": self.total}

    def table(self) -> str:
        parts = [("weights", self.weights), ("statistics", self.statistics),
                 ("activations", self.activations), ("workspace", self.workspace), ("result", self.result),
                 ("total (peak)", self.total)]
        m, n = self.largest_layer
        lines = [f"estimate before launch (from configs, no weights read): {self.method} on {self.layers} "
                 f"layer(s), the largest ({m}, {n})"]
        lines += [f"  {label:<16}{nbytes / 2**20:>12,.1f} MiB" for label, nbytes in parts]
        lines[-1] += "    the larger of calibrating and building (see rankwise.compress.estimate)"
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


def svd_bytes(m: int, n: int, itemsize: int = 4) -> int:
    """What torch.linalg.svd(full_matrices=False) of an (m, n) matrix holds: its copy, U, S and Vh."""
    k = min(m, n)
    return (m * n + m * k + k + k * n) * itemsize


def decomposition_bytes(method: str, m: int, n: int) -> int:
    """The working memory of compressing one (m, n) = (out, in) layer (see the module docstring)."""
    if method in FLOAT64_SVD:
        return svd_bytes(m, n, 8) + 2 * m * n * 8
    if method == "afm":
        return 3 * m * m * 8
    if method in DENSE_COPY:
        return 2 * m * n * 4
    return svd_bytes(m, n, 4)


def statistics_bytes(kind: str | None, m: int, n: int) -> int:
    """Float64 bytes of one layer's finished LayerStats for a method reading `kind` ("inputs"/"outputs")."""
    if kind == "inputs":
        return (n * n + n) * 8
    if kind == "outputs":
        return (m * m + m) * 8
    return 0


def forward_bytes(config, batch: int, length: int, kind: str | None, m: int, n: int) -> int:
    """Live float32 bytes of a no-grad calibration forward at its largest block, and one layer's terms."""
    tokens = batch * length
    block = tokens * (4 * config.hidden_size + 3 * config.intermediate_size) * 4
    width = n if kind == "inputs" else m
    return block + width * width * 4


def _stored_bytes(module: nn.Module) -> int:
    if hasattr(module, "stored_bytes"):
        return module.stored_bytes()
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def estimate_compress(model_name: str, method: str, config, seq_len: int = 256) -> CompressEstimate:
    """The CompressEstimate of compressing `model_name` with `method`'s `config` (its CompressConfig),
    calibrating on batches of 4 sequences of `seq_len` tokens."""
    from .api import LAYERS

    model_config, notes = read_config(model_name)
    model = meta_causal_lm(model_config)
    with unless_values_needed(f"{method}'s plan"):
        cls, config, plan = LAYERS.plan(model, method, "default", config, {})
        plan = cls.plan_ranks(model, config, plan)
        layers = {path: model.get_submodule(path) for path in plan}
        result = sum(_stored_bytes(cls.shape(layer, plan[path])) for path, layer in layers.items())
    if not layers:
        raise EstimateUnavailable(f"{method}'s settings select no layer of {model_name}: nothing to "
                                  "compress.")
    shapes = [(layer.out_features, layer.in_features) for layer in layers.values()]
    m, n = max(shapes, key=lambda shape: shape[0] * shape[1])
    kind = cls.calibration
    statistics = sum(statistics_bytes(kind, *shape) for shape in shapes)
    activations = forward_bytes(model.config, CALIBRATION_BATCH, seq_len, kind, m, n) if kind else 0
    workspace = max(decomposition_bytes(method, *shape) for shape in shapes)
    weights = sum(t.numel() * t.element_size()
                  for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values())
    if method == "pela":
        notes.append("PELA's distillation after the build (a training run) is not counted")
    return CompressEstimate(method, weights, statistics, activations, workspace, result, len(layers), (m, n),
                            notes)

