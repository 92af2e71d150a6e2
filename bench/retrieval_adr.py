"""Issue 15's retrieval claim: ADR on frozen MiniLM against BM25, plain MiniLM and a LoRA fine-tune of
MiniLM with the same number of trained parameters, on the standard library's NL→code set.

    OMP_NUM_THREADS=2 .venv/bin/python bench/retrieval_adr.py [--train-pairs 1000] [--lora-steps 150]

Data: rankwise.data.code_search (docstring summary → function source without its docstring), split by
top-level package, so the test packages are unseen. Each test query is ranked against every test
document. Texts are cut to 128 tokens.
Methods:
- BM25 (bm25s), on identifiers split at underscores;
- MiniLM: mean-pooled, normalised all-MiniLM-L6-v2 embeddings, cosine;
- ADR on MiniLM, queries only (h = 24 slots: 2·24·384 = 18,432 numbers) and both sides (h = 12 per
  side: 18,432), trained on the train split's pairs with every other training document as a negative;
- LoRA rank 2 on MiniLM's query and value projections (12 × 2 · 2 · 384 = 18,432 numbers), trained on
  the same pairs with in-batch negatives (InfoNCE, temperature 0.05), batch 32, AdamW 2e-4.
The comparison itself is rankwise.apps.retrieval_compare (the same as `rankwise retrieve`).
The claim: ADR improves MiniLM's recall@10 on unseen packages, with the same or fewer trained numbers
than the LoRA fine-tune, and at least matches it. Writes bench/results/retrieval_adr.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rankwise.apps.retrieval_compare import compare_retrieval  # noqa: E402
from rankwise.data.code_search import code_search_splits  # noqa: E402

LABELS = {"bm25": "BM25", "dense": "MiniLM", "adr": "MiniLM + ADR (queries)",
          "adr-both": "MiniLM + ADR (both sides)", "lora": "MiniLM + LoRA r2 (q, v)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-pairs", type=int, default=1000, help="training pairs used (all: 0)")
    parser.add_argument("--lora-steps", type=int, default=150)
    parser.add_argument("--select-on-dev", action="store_true",
                        help="ADR and LoRA keep their best point by dev recall@10 (retrieval_adr_dev.*)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    splits = code_search_splits()
    train, test = splits["train"][: args.train_pairs or None], splits["test"]
    started = time.perf_counter()
    dev = splits["dev"] if args.select_on_dev else None
    results = {LABELS[k]: v for k, v in compare_retrieval(train, test, lora_steps=args.lora_steps,
                                                          dev=dev).items()}
    name = "retrieval_adr_dev" if args.select_on_dev else "retrieval_adr"
    data = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "python": splits["python"], "train_pairs": len(train), "test_pairs": len(test),
            "lora_steps": args.lora_steps, "selected_on_dev": bool(dev),
            "seconds": time.perf_counter() - started, "results": results}
    out = Path(args.out)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1))
    lines = ["# NL→code retrieval on the standard library (unseen packages)", "",
             f"{len(test)} test queries against {len(test)} test documents; {len(train)} training pairs; "
             f"CPython {splits['python']}; {data['machine']}."
             + (f" ADR and LoRA keep their best point by dev recall@10 ({len(dev)} pairs)." if dev else ""),
             "",
             "| method | recall@1 | recall@5 | recall@10 | nDCG@10 | trained numbers |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | {r['recall@10']:.3f} | "
              f"{r['ndcg@10']:.3f} | {r['trained']:,} |" for name, r in results.items()]
    best_adr = max(results[LABELS[k]]["recall@10"] for k in ("adr", "adr-both"))
    base, lora = results[LABELS["dense"]]["recall@10"], results[LABELS["lora"]]["recall@10"]
    verdict = "held" if best_adr > base and best_adr >= lora else "NOT held"
    lines += ["", f"- {verdict}: ADR improves MiniLM's recall@10 on unseen packages and at least matches the "
                  f"LoRA fine-tune at the same trained numbers (ADR {best_adr:.3f}, MiniLM {base:.3f}, "
                  f"LoRA {lora:.3f})"]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
