"""Composition between attention heads of different layers, and its low-rank communication channels.

Papers: "A Mathematical Framework for Transformer Circuits" (Elhage et al., 2021) for the composition
score, and "Talking Heads: Understanding Inter-layer Communication in Transformer Language Models"
(Merullo, Eickhoff, Pavlick, NeurIPS 2024) for its decomposition into singular components.

Column-vector convention (torch weights are (out, in), y = W x). Per head, with d_head × d blocks
W_Q, W_K, W_V and the d × d_head block W_O:

    W_QK = W_Qᵀ W_K   (score = x_queryᵀ W_QK x_key)        W_OV = W_O W_V   (writes into the stream)

A sender head s (layer l1) composes with a receiver head r (layer l2 > l1) through

    Q-composition  CS_q = ‖W_QKᵀ,r W_OV,s‖_F / (‖W_QK,r‖_F ‖W_OV,s‖_F)   (s feeds r's queries)
    K-composition  CS_k = ‖W_QK,r  W_OV,s‖_F / (‖W_QK,r‖_F ‖W_OV,s‖_F)   (s feeds r's keys)
    V-composition  CS_v = ‖W_OV,r  W_OV,s‖_F / (‖W_OV,r‖_F ‖W_OV,s‖_F)

Each score lies in [0, 1] (‖AB‖_F ≤ ‖A‖_F‖B‖_F). Channels (Merullo et al.): with W_OV,s = Σ_i σ_i u_i v_iᵀ
and R the receiver's reading matrix, the components' contributions c_i = ‖R σ_i u_i v_iᵀ‖_F /
(‖R‖_F ‖W_OV,s‖_F) satisfy Σ c_i² = CS² (the v_i are orthonormal), so share_i = c_i² / CS² says how much
of the composition one direction u_i of the residual stream carries.

Llama specifics: grouped-query attention maps query head h to kv head h // (heads / kv_heads); each
receiver's RMSNorm gain γ (input_layernorm) is folded into what it reads (W diag(γ)). RoPE rotates
queries and keys by position, so W_QK is position dependent; like Elhage et al. and Merullo et al.
(whose models have no RoPE), the scores use the unrotated weights. Biases are ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["head_composition", "head_weights"]

KINDS = ("q", "k", "v")


def head_weights(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """Per layer, float32 tensors Q, K (heads, d_head, d; K repeated to query heads), V (same),
    O (heads, d, d_head).
    """
    config = getattr(model, "config", None)
    layers = getattr(getattr(model, "model", model), "layers", None)
    if (config is None or layers is None or not hasattr(layers[0], "self_attn")
            or not hasattr(layers[0].self_attn, "q_proj")):
        raise ConfigError("head_composition needs Llama-style attention "
                          "(model.model.layers[i].self_attn with q_proj, k_proj, v_proj, o_proj); "
                          "this model has another layout.")
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    d = config.hidden_size
    dh = getattr(config, "head_dim", None) or d // heads
    group = heads // kv
    out = []
    for layer in layers:
        attn = layer.self_attn
        gamma = (layer.input_layernorm.weight.detach().float() if hasattr(layer, "input_layernorm")
                 else torch.ones(d))
        q = attn.q_proj.weight.detach().float().reshape(heads, dh, d) * gamma
        k = attn.k_proj.weight.detach().float().reshape(kv, dh, d) * gamma
        v = attn.v_proj.weight.detach().float().reshape(kv, dh, d) * gamma
        o = attn.o_proj.weight.detach().float().reshape(d, heads, dh).permute(1, 0, 2)
        out.append({"Q": q, "K": k.repeat_interleave(group, 0), "V": v.repeat_interleave(group, 0), "O": o})
    return out


def _readers(w: dict, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B), each (heads, d_head, d), with the receiver's reading matrix R = Aᵀ B."""
    if kind == "q":  # W_QKᵀ = W_Kᵀ W_Q
        return w["K"], w["Q"]
    if kind == "k":  # W_QK = W_Qᵀ W_K
        return w["Q"], w["K"]
    return w["O"].transpose(1, 2), w["V"]  # W_OV = W_O W_V


def _gram(x: torch.Tensor) -> torch.Tensor:
    return x @ x.transpose(-1, -2)


def _pair_scores(sender: dict, receiver: dict, kind: str) -> torch.Tensor:
    """(receiver heads, sender heads) composition scores, all in d_head-sized products.

    ‖Aᵀ B O V‖_F² = tr(Mᵀ (A Aᵀ) M (V Vᵀ)) with M = B O (d_head × d_head): O(d_head³) per pair, never d × d.
    """
    a, b = _readers(receiver, kind)
    ga, gv = _gram(a), _gram(sender["V"])                                        # (Hr, dh, dh), (Hs, dh, dh)
    m = torch.einsum("rid,sdj->rsij", b, sender["O"])                            # (Hr, Hs, dh, dh)
    x = ga[:, None] @ m @ gv[None]
    num = (m * x).sum((-1, -2)).clamp_min(0).sqrt()
    reader = (ga * _gram(b)).sum((-1, -2)).clamp_min(0).sqrt()                  # ‖Aᵀ B‖_F
    writer = (_gram(sender["O"].transpose(1, 2)) * gv).sum((-1, -2)).clamp_min(0).sqrt()  # ‖O V‖_F
    return num / (reader[:, None] * writer[None]).clamp_min(1e-30)


def _channels(sender: dict, s: int, receiver: dict, r: int, kind: str, score: float, n: int) -> list[dict]:
    """The sender's singular components ranked by their share of the squared composition score."""
    # d × d; only for the top pairs
    ov = sender["O"][s] @ sender["V"][s]
    u, sigma, _ = torch.linalg.svd(ov)
    a, b = (t[r] for t in _readers(receiver, kind))
    r_norm = torch.linalg.matrix_norm(a.T @ b)
    contrib = (sigma * torch.linalg.vector_norm(a.T @ (b @ u), dim=0)
               / (r_norm * sigma.norm()).clamp_min(1e-30))
    share = contrib**2 / max(score**2, 1e-30)
    order = torch.argsort(share, descending=True)[:n]
    return [{"component": int(i), "sigma": float(sigma[i]), "score": float(contrib[i]),
             "share": float(share[i])} for i in order]


def head_composition(model: nn.Module, *, top: int = 10, kinds=KINDS, components: int = 3,
                     progress: bool = True) -> dict:
    """Q/K/V composition scores between every head pair of different layers, and the `top` channels.

    Returns plain data: {"layers", "heads", "kv_heads", "baseline" (1/√d, the score of unrelated
    random Gaussian heads), "scores": {kind: [[...]] an (L·H) × (L·H) matrix indexed [receiver][sender],
    0 where the receiver is not in a later layer}, "top": [{"sender": [layer, head], "receiver": [...],
    "kind", "score", "channels": [{"component", "sigma", "score", "share"}]}] best first}.
    """
    from tqdm.auto import tqdm

    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ConfigError(f"head_composition: unknown kinds {sorted(unknown)}; use some of 'q', 'k', 'v'.")
    weights = head_weights(model)
    n_layers, heads = len(weights), weights[0]["Q"].shape[0]
    d = weights[0]["Q"].shape[2]
    scores = {kind: torch.zeros(n_layers * heads, n_layers * heads) for kind in kinds}
    with torch.no_grad():
        for l2 in tqdm(range(1, n_layers), desc="head composition", unit="layer", disable=not progress):
            for l1 in range(l2):
                for kind in kinds:
                    block = _pair_scores(weights[l1], weights[l2], kind)
                    scores[kind][l2 * heads:(l2 + 1) * heads, l1 * heads:(l1 + 1) * heads] = block
        flat = torch.stack([scores[k] for k in kinds])                           # (kinds, receivers, senders)
        best = torch.topk(flat.flatten(), min(top, flat.numel())).indices.tolist()
        ranked = []
        for index in best:
            ki, rest = divmod(index, flat.shape[1] * flat.shape[2])
            rcv, snd = divmod(rest, flat.shape[2])
            score = float(flat.flatten()[index])
            if score <= 0:
                break
            (l2, r), (l1, s) = divmod(rcv, heads), divmod(snd, heads)
            ranked.append({"sender": [l1, s], "receiver": [l2, r], "kind": kinds[ki], "score": score,
                           "channels": _channels(weights[l1], s, weights[l2], r, kinds[ki], score,
                                                 components)})
    return {"layers": n_layers, "heads": heads,
            "kv_heads": getattr(model.config, "num_key_value_heads", heads),
            "baseline": float(d ** -0.5), "scores": {k: v.tolist() for k, v in scores.items()}, "top": ranked}
