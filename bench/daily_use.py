"""The daily-use figures the README quotes, from one run: verify after training (LoRA and DoRA), the GGUF
round trip, and the memory estimates before launch against the measured peaks.

    OMP_NUM_THREADS=1 python bench/daily_use.py [--steps 10]

- verify: `rankwise.finetune` on SmolLM2-135M (examples/demo.json's LoRA rank 8, alpha 16, all linear
  layers; --steps steps, 20 held-out examples), whose last act is `rankwise verify`: the max |logit|
  difference of merged, PEFT and plain-transformers copies against the adapter applied unmerged.
- gguf: that LoRA exported as one f32 GGUF file, loaded back by transformers' GGUF reader, on verify's
  prompts.
- estimates: `estimate_finetune` / `estimate_compress` against the peak that tests/train/test_estimate.py
  and tests/compress/test_estimate.py measure (the same functions, so the figures are the tests' own).
Writes bench/results/daily_use.json. About 10 minutes of CPU time.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the measuring helpers live beside the tests that assert on them

from rankwise import TrainConfig, finetune  # noqa: E402
from rankwise.adapters import adapt  # noqa: E402
from rankwise.io import load_adapter, write_json  # noqa: E402
from rankwise.io.export import export_model  # noqa: E402
from rankwise.models import load  # noqa: E402
from rankwise.train.estimate import estimate_finetune  # noqa: E402
from rankwise.train.trainee import AdapterTrainee  # noqa: E402
from rankwise.train.verify import PROMPTS, max_difference, prompt_logits  # noqa: E402
from tests.compress.test_estimate import measured as measured_compression  # noqa: E402
from tests.train.test_estimate import DEMO, RATES, measured_peak, padded_batch  # noqa: E402

MIB = 2**20


def verify_after_training(method: str, steps: int, folder: Path) -> dict:
    config = TrainConfig(model="smollm2-135m", **DEMO | {"method": method}, max_steps=steps, eval_size=20,
                         eval_base=False, output_dir=str(folder / method), progress=False)
    return finetune(config)["verify"]


def gguf_round_trip(adapter: Path, folder: Path) -> dict:
    from transformers import AutoModelForCausalLM

    model, tokenizer = load("smollm2-135m")
    load_adapter(model, adapter)
    token_ids = [tokenizer(p, return_tensors="pt").input_ids for p in PROMPTS]
    expected = prompt_logits(model, token_ids)
    export_model(model, folder / "gguf", "gguf", tokenizer, "f32")
    loaded = AutoModelForCausalLM.from_pretrained(folder / "gguf", gguf_file="model-f32.gguf",
                                                  dtype=torch.float32)
    return {"max_abs_diff": max_difference(prompt_logits(loaded, token_ids), expected),
            "max_abs_logit": max(float(t.abs().max()) for t in expected)}


def finetune_estimate(model_name: str, method: str) -> dict:
    config = TrainConfig(model=model_name, **DEMO | {"method": method})
    estimate = estimate_finetune(config, **RATES)
    model, tokenizer = load(model_name)
    adapt(model, method, config=config.adapter_config())
    optimizer = AdapterTrainee(model).optimizer(config)
    _, _, peak = measured_peak(model, optimizer, padded_batch(len(tokenizer), 8, 96))
    return {"model": model_name, "method": method, "estimated_mib": round(estimate.total / MIB, 1),
            "measured_mib": round(peak / MIB, 1)}


def compress_estimate(method: str) -> dict:
    estimate, _, peak, _ = measured_compression(method, {"ratio": 0.5}, "smollm2-135m")
    return {"model": "smollm2-135m", "method": method, "estimated_mib": round(estimate.total / MIB, 1),
            "measured_mib": round(peak / MIB, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "daily_use.json"))
    args = parser.parse_args()
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
                                f"threads, torch {torch.__version__}", "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results["verify"] = {m: verify_after_training(m, args.steps, folder) for m in ("lora", "dora")}
        print("verify", results["verify"], flush=True)
        results["gguf_f32"] = gguf_round_trip(folder / "lora" / "adapter", folder)
        print("gguf", results["gguf_f32"], flush=True)
    results["estimates"] = [
        finetune_estimate("tiny-llama", "lora"), finetune_estimate("smollm2-135m", "lora"),
        finetune_estimate("smollm2-135m", "dora"), compress_estimate("svd"), compress_estimate("asvd")]
    print("estimates", results["estimates"], flush=True)
    write_json(Path(args.out), results)


if __name__ == "__main__":
    main()
