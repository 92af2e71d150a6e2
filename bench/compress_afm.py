"""AFM (output-feature PCA) against weight SVD at the same parameter count, on a CTR model and on MiniLM.

Claim checked: "AFM keeps more accuracy than weight SVD at the same size on the CTR model".

CTR part: an embedding + MLP model (bench/ctr_data.py) is trained on synthetic clicks (the epoch with the
best validation log-loss is kept), then its hidden Linear layers, and in a second setting its embedding
tables too, are compressed by each method at the same ratio of parameters kept (the same rank for both),
with no fine-tuning; then both get the same short fine-tune (one epoch, all parameters). Held-out AUC
(sklearn roc_auc_score) and log-loss are reported. AFM calibrates on the training split's lookups.
The SVD embedding baseline is E ≈ (U_k S_k) V_kᵀ in the same module as AFM's, with a zero bias, so both
store the same parameters.

MiniLM part: all-MiniLM-L6-v2's FFN output layers (encoder.layer.*.output.dense, 1536 -> 384) at the same
rank: the mean squared error of each layer's output against the original's, on the bundled corpus's
calibration text (where AFM's statistics come from) and on its held-out text, plus the cosine similarity
of the mean-pooled sentence embeddings when all six layers are compressed.

    OMP_NUM_THREADS=1 python bench/compress_afm.py [--out bench/results/compress_afm.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F
from ctr_data import ClickData, EmbeddingMLP, make_click_data
from sklearn.metrics import log_loss, roc_auc_score

import rankwise
from rankwise.compress import COMPRESSORS
from rankwise.compress.afm import AfmConfig, LowRankEmbedding
from rankwise.compress.calibration import collect_stats
from rankwise.compress.svd import SvdConfig
from rankwise.data.text import corpus_text, token_blocks
from rankwise.linalg import top_svd
from rankwise.models import load

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 -- after choosing the file-only backend

RATIOS = (0.5, 0.25, 0.125)  # share of the compressed layers' parameters kept
MINILM_RANKS = (32, 64, 128)


def train(model, data: ClickData, *, epochs: int, lr: float, batch: int, seed: int,
          valid: ClickData | None = None) -> list[dict]:
    """Adam on the click log-loss; with `valid`, the epoch of lowest validation log-loss is kept."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history, best = [], (float("inf"), None)
    for epoch in range(epochs):
        model.train()
        for rows in torch.randperm(len(data.clicks), generator=generator).split(batch):
            loss = F.binary_cross_entropy_with_logits(model(data.ids[rows]), data.clicks[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if valid is not None:
            scores = evaluate(model, valid)
            history.append({"epoch": epoch + 1, **scores})
            if scores["log_loss"] < best[0]:
                best = (scores["log_loss"], copy.deepcopy(model.state_dict()))
    if valid is not None:
        model.load_state_dict(best[1])
    model.eval()
    return history


def evaluate(model, data: ClickData) -> dict:
    model.eval()
    with torch.no_grad():
        probability = torch.sigmoid(torch.cat([model(ids) for ids in data.ids.split(4096)])).double()
    return {"auc": round(roc_auc_score(data.clicks, probability), 5),
            "log_loss": round(log_loss(data.clicks, probability), 5)}


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def svd_embedding(embedding, rank: int) -> LowRankEmbedding:
    """E ≈ (U_k S_k) V_kᵀ in LowRankEmbedding's form (zero bias)."""
    table = embedding.weight.detach()
    svd = top_svd(table, rank)
    module = LowRankEmbedding(table.shape[0], table.shape[1], rank)
    with torch.no_grad():
        module.table.copy_(svd.U * svd.S)
        module.weight.copy_(svd.Vh.T)
    return module


def compress_ctr(trained: EmbeddingMLP, method: str, ratio: float, embeddings: bool,
                 train_ids: torch.Tensor) -> EmbeddingMLP:
    model = copy.deepcopy(trained)
    calibration = {"calibration": list(train_ids.split(2048))} if method == "afm" else {}
    rankwise.compress(model, method, ratio=ratio, targets=model.hidden_layer_names(), **calibration)
    if embeddings:
        for field, table in enumerate(model.embeddings):
            rank = max(1, round(ratio * table.embedding_dim))
            model.embeddings[field] = (LowRankEmbedding.from_afm(table, train_ids[:, field], rank)
                                       if method == "afm" else svd_embedding(table, rank))
    return model


def ctr_benchmark(args) -> dict:
    data = make_click_data(rows=args.rows, seed=args.seed)
    train_data, valid_data, test_data = data.split((0.7, 0.1, 0.2))
    model = EmbeddingMLP(seed=args.seed)
    started = time.perf_counter()
    history = train(model, train_data, epochs=args.epochs, lr=2e-3, batch=512, seed=args.seed,
                    valid=valid_data)
    result = {
        "data": {"rows": args.rows, "fields": len(model.embeddings),
                 "click_rate": round(float(data.clicks.mean()), 4),
                 "split": "70% train / 10% validation / 20% test",
                 "oracle_test_auc": round(roc_auc_score(test_data.clicks, test_data.true_logits), 5)},
        "training": {"epochs": args.epochs, "history": history,
                     "seconds": round(time.perf_counter() - started, 1)},
        "uncompressed": {**evaluate(model, test_data), "parameters": parameters(model),
                         "mlp_hidden_parameters": sum(parameters(model.get_submodule(p))
                                                      for p in model.hidden_layer_names()),
                         "embedding_parameters": parameters(model.embeddings)},
        "finetune": {"epochs": 1, "lr": 5e-4, "batch": 512, "trains": "all parameters"},
        "rows": [],
    }
    for embeddings in (False, True):
        for ratio in RATIOS:
            for method in ("afm", "svd"):
                small = compress_ctr(model, method, ratio, embeddings, train_data.ids)
                row = {"scope": "mlp+embeddings" if embeddings else "mlp", "ratio": ratio, "method": method,
                       "parameters": parameters(small), **evaluate(small, test_data)}
                for p in small.parameters():
                    p.requires_grad_(True)
                train(small, train_data, epochs=1, lr=5e-4, batch=512, seed=args.seed + 1)
                tuned = evaluate(small, test_data)
                row.update(auc_finetuned=tuned["auc"], log_loss_finetuned=tuned["log_loss"])
                result["rows"].append(row)
                print(row, flush=True)
    return result


def _batches(blocks: torch.Tensor) -> list[dict]:
    return [{"input_ids": b, "attention_mask": torch.ones_like(b)} for b in blocks.split(4)]


def _capture(model, paths: list[str], batches: list[dict]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{path: (inputs, outputs)} of each layer, flattened over tokens."""
    seen = {path: ([], []) for path in paths}

    def record(inputs: list, outputs: list):
        def hook(module, args, output) -> None:  # returns None: the layer's output is left as it is
            inputs.append(args[0].reshape(-1, args[0].shape[-1]))
            outputs.append(output.reshape(-1, output.shape[-1]))
        return hook

    hooks = [model.get_submodule(path).register_forward_hook(record(*seen[path])) for path in paths]
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for hook in hooks:
        hook.remove()
    return {path: (torch.cat(xs), torch.cat(ys)) for path, (xs, ys) in seen.items()}


def _sentence_embeddings(model, batches: list[dict]) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(torch.cat([model(**b).last_hidden_state.mean(1) for b in batches]), dim=-1)


def minilm_benchmark(args) -> dict:
    model, tokenizer = load("minilm-l6")
    paths = [f"encoder.layer.{i}.output.dense" for i in range(model.config.num_hidden_layers)]
    calibration = _batches(token_blocks(tokenizer, corpus_text("calibration"), args.length,
                                        args.calib_blocks))
    held_out = _batches(token_blocks(tokenizer, corpus_text("evaluation"), args.length, args.eval_blocks))
    stats = collect_stats(model, paths, calibration, inputs=False, outputs=True)
    captured = {"calibration": _capture(model, paths, calibration),
                "held_out": _capture(model, paths, held_out)}
    reference = _sentence_embeddings(model, held_out)
    rows = []
    for rank in MINILM_RANKS:
        for method, config in (("afm", AfmConfig(rank=rank)), ("svd", SvdConfig(rank=rank))):
            row = {"rank": rank, "method": method}
            layers = {path: COMPRESSORS.get(method).build(model.get_submodule(path), config, stats[path])
                      for path in paths}
            row["parameters_per_layer"] = parameters(layers[paths[0]])
            for split, data in captured.items():
                with torch.no_grad():
                    errors = [(layers[p](x) - y).square().mean().item() for p, (x, y) in data.items()]
                    lost = [(layers[p](x) - y).square().sum().item() / (y - y.mean(0)).square().sum().item()
                            for p, (x, y) in data.items()]
                row[f"mse_{split}"] = [round(e, 6) for e in errors]
                row[f"mean_mse_{split}"] = round(sum(errors) / len(errors), 6)
                row[f"mean_variance_lost_{split}"] = round(sum(lost) / len(lost), 5)
            compressed = rankwise.compress(copy.deepcopy(model), method, rank=rank, targets=paths,
                                           **({"calibration": calibration} if method == "afm" else {}))
            cosine = (_sentence_embeddings(compressed, held_out) * reference).sum(-1).mean().item()
            row["held_out_embedding_cosine"] = round(cosine, 5)
            rows.append(row)
            print({k: v for k, v in row.items() if not k.startswith("mse_")}, flush=True)
    return {"layers": paths, "dense_parameters_per_layer": parameters(model.get_submodule(paths[0])),
            "tokens": {"calibration": args.calib_blocks * args.length,
                       "held_out": args.eval_blocks * args.length},
            "text": "rankwise.data.text's bundled corpus (CPython's pydoc topics): calibration vs evaluation",
            "rows": rows}


def plot(ctr: dict, path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, key, title in ((axes[0], "auc", "no fine-tuning"), (axes[1], "auc_finetuned", "after 1 epoch")):
        for scope, style in (("mlp", "-"), ("mlp+embeddings", "--")):
            for method, color in (("afm", "tab:blue"), ("svd", "tab:orange")):
                rows = [r for r in ctr["rows"] if r["scope"] == scope and r["method"] == method]
                axis.plot([r["parameters"] for r in rows], [r[key] for r in rows], style, color=color,
                          marker="o", label=f"{method.upper()} ({scope})")
        axis.axhline(ctr["uncompressed"]["auc"], color="gray", linestyle=":")
        axis.plot([ctr["uncompressed"]["parameters"]], [ctr["uncompressed"]["auc"]], "*", color="gray",
                  markersize=10, label="uncompressed")
        axis.set(title=f"CTR model, test AUC, {title}", xlabel="parameters kept (whole model)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test AUC")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--calib-blocks", type=int, default=16)
    parser.add_argument("--eval-blocks", type=int, default=8)
    parser.add_argument("--out", default="bench/results/compress_afm.json")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    results = {"ctr": ctr_benchmark(args)}
    results["minilm"] = minilm_benchmark(args)
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results["ctr"], out.with_suffix(".png"))

    ctr = results["ctr"]
    print(f"\nCTR test AUC / log-loss; uncompressed {ctr['uncompressed']['auc']} / "
          f"{ctr['uncompressed']['log_loss']} with {ctr['uncompressed']['parameters']} parameters\n")
    print("| scope | ratio | method | parameters | AUC | log-loss | AUC tuned | log-loss tuned |")
    print("|---|---|---|---|---|---|---|---|")
    for r in ctr["rows"]:
        print(f"| {r['scope']} | {r['ratio']} | {r['method']} | {r['parameters']} | {r['auc']} | "
              f"{r['log_loss']} | {r['auc_finetuned']} | {r['log_loss_finetuned']} |")
    print("\nMiniLM FFN output layers (mean over 6 layers)\n")
    print("| rank | method | MSE calibration | MSE held-out | variance lost held-out | embedding cosine |")
    print("|---|---|---|---|---|---|")
    for r in results["minilm"]["rows"]:
        print(f"| {r['rank']} | {r['method']} | {r['mean_mse_calibration']} | {r['mean_mse_held_out']} | "
              f"{r['mean_variance_lost_held_out']} | {r['held_out_embedding_cosine']} |")


if __name__ == "__main__":
    main()
