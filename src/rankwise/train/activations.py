"""What one training step of a Llama-style causal LM keeps for backward, counted from shapes alone.

    nbytes = activation_bytes(meta_model, batch, length, padded=True)

For each decoder block, per token, in elements of the model's dtype (h hidden, q = heads · head dim,
k = key/value heads · head dim, i the MLP width, s the sequence length), as read with saved_tensors_hooks
on transformers' LlamaDecoderLayer with SDPA attention on CPU:
    2h + 2        the residual stream entering each RMSNorm, and each norm's 1/rms
    2q + heads    the rotated queries, SDPA's output (which is o_proj's input), its log-sum-exp
    2k            keys and values; with a padding mask 2q + s instead: transformers then repeats keys and
                  values to every head, and SDPA keeps a float mask row per token
    3i            gate output, SiLU(gate), up output
    + the projections' inputs that are kept: h for q/k/v's (shared), h for gate/up's, i for down's
    + h per RMSNorm whose weight trains (its normalized input)
A projection's input is kept when its weight trains or its adapter keeps it. What an adapter keeps
besides is measured, not assumed: each distinct adapted shape is rebuilt once on the CPU with random
weights, run on 4 and on 12 tokens of input (requiring grad, as it does past the first block that
trains), and its saved tensors are counted: bytes per token, and a per-step constant. LoRA keeps A x
(r per token) and, with dropout, the dropout mask and the dropped input in place of the shared input;
DoRA, VeRA-like and other methods keep what their forward needs. A reparameterized layer
(rankwise.reparam) is counted as keeping its input and B's input (rank); SST keeps more.

Blocks below the first one that trains keep nothing: no gradient flows there. In the first one (when
the embeddings do not train) none reaches q/k/v's input either, so SDPA keeps nothing unless q/k/v
train (o_proj then keeps its input if it trains), and their adapters' dropout keeps no mask. Beside the
blocks: h if the head trains, h if the final norm trains, h + 1 if the embeddings train, and the loss
(loss_elements): 3 · V per token for a vocabulary V of more than about 4h (the log-softmax, kept, and
two V-wide gradients when backward starts), which dominates small models with SmolLM2's 49k vocabulary.
tests/train/test_estimate.py checks the formula against the tensors autograd keeps (within 1 %).

Not modelled: block-level adapters (AdapterTune, LoRRA) keep more than the formula counts, eager
attention keeps its s × s probabilities, and non-Llama blocks only approximately follow this formula.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import torch
from torch import nn

PROJECTIONS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
               "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
QKV = ("q", "k", "v")  # the projections sharing the block's normalized input


def block_elements(h: int, q: int, kv: int, heads: int, i: int, length: int, *, padded: bool,
                   attention: bool = True, kept_inputs: int = 0, norms_train: int = 0) -> int:
    """Elements per token one decoder block keeps (see the module docstring). `kept_inputs`: the total
    width of the projection inputs kept (h for q/k/v's, h for gate/up's, i for down's; q for o_proj's
    when the attention keeps nothing); attention=False: no gradient reaches the queries, keys or values
    (the first block that trains, when its q/k/v do not), so SDPA keeps nothing."""
    kept_by_attention = 2 * q + heads + (2 * q + length if padded else 2 * kv) if attention else 0
    return 2 * h + 2 + kept_by_attention + 3 * i + kept_inputs + h * norms_train


def loss_elements(vocab: int, hidden: int) -> int:
    """Elements per token the loss holds at the step's peak: the log-softmax it keeps (V), and either two
    more V-wide tensors when backward starts (the gradient from the NLL loss and the one passed to the
    logits) or, at the end of the forward, the logits and the final norm's temporaries (V + 4h + 2,
    measured: the peak for a vocabulary under about 4h)."""
    return vocab + max(2 * vocab, vocab + 4 * hidden + 2)


def kept_for_backward(fn: Callable[[], object], own: nn.Module) -> tuple[dict[int, int], object]:
    """({storage address: bytes} that autograd keeps for backward while fn() runs, other than `own`'s
    parameters and buffers; fn's result, to be held while the addresses are compared)."""
    skip = {t.untyped_storage().data_ptr() for t in itertools.chain(own.parameters(), own.buffers())}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip and storage.nbytes():
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    return kept, result


@dataclasses.dataclass(frozen=True)
class LayerCost:
    keeps_input: bool
    bytes_per_token: float = 0.0  # besides the input
    bytes_per_step: float = 0.0


def _probe(method: str, config, in_features: int, out_features: int, bias: bool,
           input_grad: bool) -> LayerCost:
    """What one `method` adapter on an (out, in) linear keeps, measured on a random CPU replica (once
    per method, layer config, shape and whether its input carries a gradient, in a process)."""
    key = (method, repr(config), in_features, out_features, bias, input_grad)
    if key not in _PROBED:
        _PROBED[key] = _measure(method, config, in_features, out_features, bias, input_grad)
    return _PROBED[key]


_PROBED: dict[tuple, LayerCost] = {}


def _measure(method: str, config, in_features: int, out_features: int, bias: bool,
             input_grad: bool) -> LayerCost:
    from ..adapters import adapt

    holder = nn.Module()
    with torch.random.fork_rng(devices=[]):  # the replica's random init leaves the caller's stream alone
        holder.layer = nn.Linear(in_features, out_features, bias=bias)
        adapt(holder, method, config=config, plan={"layer": config})
        holder.train()
        sizes = []
        for tokens in (4, 12):
            x = torch.randn(1, tokens, in_features, requires_grad=input_grad)
            kept, _ = kept_for_backward(lambda x=x: holder.layer(x), holder)
            keeps_input = kept.pop(x.untyped_storage().data_ptr(), None) is not None
            sizes.append(sum(kept.values()))
    per_token = (sizes[1] - sizes[0]) / 8
    return LayerCost(keeps_input, per_token, max(0.0, sizes[0] - 4 * per_token))


def layer_cost(module: nn.Module | None, input_grad: bool = True) -> LayerCost:
    """What a projection keeps: an adapted linear's adapters measured by _probe, a trainable low-rank
    factorization its input and rank, a trainable plain linear its input, a frozen one nothing.
    `input_grad`: whether a gradient flows into its input (LoRA's dropout then keeps its mask)."""
    from ..adapters.layer import AdaptedLinear

    if module is None:
        return LayerCost(False)
    if isinstance(module, AdaptedLinear):
        base = module.base
        costs = [_probe(a.name, dataclasses.replace(a.config, modules_to_save=[]), base.in_features,
                        base.out_features, base.bias is not None, input_grad) for a in module.pending()]
        return LayerCost(any(c.keeps_input for c in costs) or _trains(base),
                         sum(c.bytes_per_token for c in costs), sum(c.bytes_per_step for c in costs))
    if not _trains(module):
        return LayerCost(False)
    element = next(p for p in module.parameters()).element_size()
    return LayerCost(True, getattr(module, "rank", 0) * element)


def _trains(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def _find(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def activation_bytes(model: nn.Module, batch: int, length: int, padded: bool) -> int:
    """Bytes kept for backward, with the loss's peak copies, in a batch × length step of `model` (a
    Llama-style causal LM, on any device, whose trainable parameters have requires_grad set)."""
    from ..models.meta import EstimateUnavailable

    c = model.config
    layers = getattr(model.get_decoder(), "layers", None)
    needed = ("num_attention_heads", "hidden_size", "intermediate_size", "vocab_size")
    if layers is None or not all(getattr(c, name, None) for name in needed):
        raise EstimateUnavailable(f"the activation formula covers Llama-style decoders (model.layers, "
                                  f"{', '.join(needed)}); a {c.model_type} model is not one.")
    heads, h, i = c.num_attention_heads, c.hidden_size, c.intermediate_size
    head_dim = getattr(c, "head_dim", None) or h // heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    element = next(model.parameters()).element_size()
    layers = list(layers)
    embed_trains = _trains(model.get_input_embeddings())
    first = 0 if embed_trains else next((n for n, layer in enumerate(layers) if _trains(layer)), len(layers))
    per_token, per_step = 0.0, 0.0
    for index in range(first, len(layers)):
        opens = index == first and not embed_trains  # no gradient reaches this block's own input
        found = {name: _find(layers[index], path) for name, path in PROJECTIONS.items()}
        costs = {name: layer_cost(module, not (opens and name in QKV)) for name, module in found.items()}
        attention = not opens or any(_trains(found[n]) for n in QKV)
        kept_inputs = h * any(costs[n].keeps_input for n in QKV) + i * costs["down"].keeps_input \
            + h * (costs["gate"].keeps_input or costs["up"].keeps_input) \
            + heads * head_dim * (costs["o"].keeps_input and not attention)
        norms = sum(_trains(_find(layers[index], n)) for n in ("input_layernorm", "post_attention_layernorm"))
        elements = block_elements(h, heads * head_dim, kv_heads * head_dim, heads, i, length, padded=padded,
                                  attention=attention, kept_inputs=kept_inputs, norms_train=norms)
        per_token += element * elements + sum(cost.bytes_per_token for cost in costs.values())
        per_step += sum(cost.bytes_per_step for cost in costs.values())
    beside = h * (_trains(model.get_output_embeddings()) + _trains(_find(model.get_decoder(), "norm")))
    beside += (h + 1) * embed_trains + loss_elements(c.vocab_size, h)
    tokens = batch * length
    return round(tokens * (per_token + element * beside) + per_step)
