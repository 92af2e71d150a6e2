"""Build the seed corpora (fuzz/corpus/<name>/) and the templates the harnesses use (fuzz/seeds/).

Run once (already done; the results are in the tree): OMP_NUM_THREADS=1 .venv/bin/python fuzz/make_seeds.py
Every seed is a real file rankwise or PEFT wrote. Harnesses whose first input byte picks a mode get
one seed per mode, prefixed with that byte (see each harness's docstring).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HERE, SEEDS, make_tiny_llama  # noqa: E402

import rankwise  # noqa: E402

CORPUS = HERE / "corpus"


def put(name: str, seed: str, data: bytes, mode: int | None = None) -> None:
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / seed).write_bytes(data if mode is None else bytes([mode]) + data)


@torch.no_grad()
def adapted(method: str, **fields):
    model = make_tiny_llama()
    rankwise.adapt(model, method, **fields)
    generator = torch.Generator().manual_seed(1)
    for param in model.parameters():
        if param.requires_grad:  # B starts at zero: make the seeds' tensors non-trivial
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


def adapters(tmp: Path) -> None:
    small = {"rank": 2, "targets": ["q_proj", "v_proj"]}
    for method, fields in (
        ("lora", small),
        ("dora", small),
        ("rslora", {**small, "rank_pattern": {"v_proj": 1}}),
        ("loldu", {"targets": ["q_proj"], "rank": 2}),
    ):
        folder = rankwise.save_adapter(adapted(method, **fields), tmp / method)
        meta = (folder / "adapter.json").read_bytes()
        weights = (folder / "adapter.safetensors").read_bytes()
        put("adapter_json", f"{method}.json", meta)
        put("safetensors", f"adapter-{method}.safetensors", weights)
        put("adapter_folder", f"weights-{method}", weights, mode=0)
        put("adapter_folder", f"weights-resigned-{method}", weights, mode=1)
        put("adapter_folder", f"meta-resigned-{method}", meta, mode=2)
    # the template folder adapter_folder loads: a valid LoRA for make_tiny_llama()
    target = SEEDS / "adapter_folder"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(tmp / "lora", target)
    # a format-1 style record (rankwise <= 0.1) exercises the other branch of parse_plan
    meta = json.loads((tmp / "lora" / "adapter.json").read_text())
    old = {
        "format_version": 1,
        "method": "lora",
        "name": "default",
        "config": {**meta["config"], "rank": 2, "alpha": 4.0, "dropout": 0.0},
        "targets": list(meta["plan"]),
        "layer_configs": {list(meta["plan"])[0]: {"rank": 1}},
    }
    put("adapter_json", "format1.json", json.dumps(old, indent=2).encode())


def peft_files(tmp: Path) -> None:
    import peft

    for label, flags in (
        ("lora", {}),
        ("dora", {"use_dora": True}),
        ("rslora", {"use_rslora": True}),
        ("patterns", {"rank_pattern": {"q_proj": 2}, "alpha_pattern": {"v_proj": 3}}),
    ):
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], **flags)
        model = peft.get_peft_model(make_tiny_llama(), config)
        model.save_pretrained(str(tmp / f"peft-{label}"))
        put("peft_config", f"{label}.json", (tmp / f"peft-{label}" / "adapter_config.json").read_bytes())
    put(
        "safetensors", "peft-lora.safetensors", (tmp / "peft-lora" / "adapter_model.safetensors").read_bytes()
    )


def checkpoint(tmp: Path) -> None:
    from rankwise.train import TrainConfig, train

    g = torch.Generator().manual_seed(0)
    features = []
    for _ in range(6):
        ids = torch.randint(1, 64, (8,), generator=g).tolist()
        features.append({"input_ids": ids, "labels": [-100] * 3 + ids[3:]})
    config = TrainConfig(
        model="tiny-llama",
        task="iso-dates",
        rank=2,
        targets=["q_proj"],
        max_steps=2,
        per_device_train_batch_size=3,
        learning_rate=1e-2,
        output_dir=str(tmp / "run"),
        progress=False,
        init_batches=1,
        save_every=1,
        save_total_limit=None,
    )
    model = make_tiny_llama()
    torch.manual_seed(0)
    rankwise.adapt(model, config.method, name=config.adapter_name, config=config.adapter_config())
    train(model, features, config, pad_token_id=0)
    step = tmp / "run" / "checkpoints" / "step-000002"
    target = SEEDS / "checkpoint"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(step, target)
    put("checkpoint", "trainer_state.json", (step / "trainer_state.json").read_bytes(), mode=0)
    put("checkpoint", "manifest.json", (step / "manifest.json").read_bytes(), mode=1)
    # the same state with its RNG lists cut short: a small seed mutates faster (read_checkpoint does not
    # interpret the RNG state; resuming does)
    state = json.loads((step / "trainer_state.json").read_text())
    for rest in state["rng"]:
        rest["python"][1] = rest["python"][1][:4]
        rest["numpy"][1] = rest["numpy"][1][:4]
    put("checkpoint", "trainer_state-short.json", json.dumps(state).encode(), mode=0)
    for part in ("optimizer", "rng"):
        put("safetensors", f"{part}.safetensors", (step / f"{part}.safetensors").read_bytes())


def configs() -> None:
    demo = {
        "model": "tiny-llama",
        "method": "lora",
        "rank": 8,
        "alpha": 16,
        "dropout": 0.0,
        "targets": "all-linear",
        "task": "iso-dates",
        "eval_size": 100,
        "max_length": 96,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.05,
        "max_steps": 80,
        "per_device_train_batch_size": 8,
        "max_new_tokens": 16,
        "seed": 42,
        "save_every": 50,
        "save_total_limit": 2,
        "output_dir": "runs/demo",
    }
    put("config", "demo.json", json.dumps(demo, indent=2).encode(), mode=0)
    aliases = {
        "model_name_or_path": "tiny-llama",
        "lora_r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj"],
        "task": ["iso-dates"],
        "method_config": {},
        "optimizer": "adamw",
        "optimizer_config": {"betas": [0.9, 0.95]},
        "rank_pattern": {"q_proj": 2},
        "resume": None,
    }
    put("config", "aliases.json", json.dumps(aliases).encode(), mode=0)
    yaml_text = "\n".join(f"{k}: {json.dumps(v)}" for k, v in demo.items()) + "\n"
    put("config", "demo.yaml", yaml_text.encode(), mode=1)
    put(
        "config",
        "nested.yaml",
        b"model: tiny-llama\ntask: iso-dates\nmethod_config: {}\n"
        b"targets:\n  - q_proj\n  - v_proj\nrank_pattern:\n  q_proj: 2\n",
        mode=1,
    )
    put(
        "config",
        "overrides",
        b"model=tiny-llama task=iso-dates --rank 4 --lr=1e-3 --no-progress "
        b'method_config.exclude=["k_proj"] --targets ["q_proj","v_proj"] resume=null',
        mode=2,
    )
    put(
        "config",
        "flags",
        b"--model tiny-llama --task iso-dates --progress true rank_pattern.q_proj=2",
        mode=2,
    )


def data_files() -> None:
    rows = [
        {"prompt": "Convert 3 March 2021 to ISO.", "answer": "2021-03-03"},
        {"prompt": "Sum 2 and 3", "answer": 5},
        {"prompt": 'Quote "x"', "answer": "y"},
    ]
    put("loaders", "rows.jsonl", ("\n".join(json.dumps(r) for r in rows) + "\n\n").encode(), mode=0)
    put("loaders", "bom-crlf.jsonl", b"\xef\xbb\xbf" + b'{"prompt": "a", "answer": "b"}\r\n', mode=0)
    put(
        "loaders",
        "rows.csv",
        b'prompt,answer\r\n"Convert 3 March 2021, please",2021-03-03\r\nx,"multi\nline"\r\n',
        mode=1,
    )


# --- libFuzzer dictionaries (fuzz/dicts/<name>.dict): tokens the mutator splices in ----------------------
JSON_TOKENS = [
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    '"',
    "true",
    "false",
    "null",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1",
    "0",
    "1.5",
    "1e-300",
    "12345678901234567890",
    '"\\u0000"',
    '"\\ud800"',
    '"\\n"',
]
YAML_TOKENS = [
    "---",
    "...",
    "- ",
    ": ",
    "? ",
    "&a ",
    "*a",
    "<<: ",
    "!!str ",
    "!!int ",
    "!!float ",
    "!!binary ",
    "!!timestamp ",
    "!!set ",
    "!!omap ",
    "!!null ",
    "!!python/object ",
    "2001-12-14",
    "~",
    "|",
    ">",
    ".inf",
    ".nan",
    "0x1F",
    "0o17",
    "1_000",
]
SAFETENSORS_TOKENS = [
    '"dtype"',
    '"shape"',
    '"data_offsets"',
    '"__metadata__"',
    '"format"',
    '"pt"',
    '"F64"',
    '"F32"',
    '"F16"',
    '"BF16"',
    '"I64"',
    '"I32"',
    '"I16"',
    '"I8"',
    '"U8"',
    '"U16"',
    '"U32"',
    '"U64"',
    '"BOOL"',
    '"F8_E4M3"',
    '"F8_E5M2"',
    '"F4"',
    '"C64"',
    "[]",
    "[0]",
    "[0,0]",
    "[1,1]",
    "\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00",
    "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x7f",
]


def _words(value, out: set) -> None:
    """Every key and short string value of a JSON document, quoted as JSON."""
    if isinstance(value, dict):
        for key, item in value.items():
            out.add(json.dumps(key))
            _words(item, out)
    elif isinstance(value, list):
        for item in value:
            _words(item, out)
    elif isinstance(value, str) and len(value) <= 40:
        out.add(json.dumps(value))


def _escape(token: str) -> str:
    raw = token.encode()
    if "\\x" in token:  # already written in libFuzzer's escapes
        return f'"{token}"'
    return (
        '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\x{b:02x}" for b in raw) + '"'
    )


def dictionaries() -> None:
    from rankwise import ADAPTERS
    from rankwise.io.peft_config import _IGNORED, _UNSUPPORTED
    from rankwise.train.config import ALIASES, FIELDS

    folder = HERE / "dicts"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    methods = {json.dumps(m) for m in ADAPTERS.names()}
    fields = {json.dumps(f) for m in ADAPTERS.names() for f in ADAPTERS.get(m).config_class.field_names()}
    settings = set(FIELDS) | set(ALIASES)
    for name in (
        "adapter_json",
        "adapter_folder",
        "checkpoint",
        "peft_config",
        "config",
        "loaders",
        "safetensors",
    ):
        words: set = set()
        for seed in (CORPUS / name).iterdir():
            data = seed.read_bytes()
            for start in (0, 1):
                try:
                    _words(json.loads(data[start:]), words)
                except ValueError:
                    pass
        tokens = set(JSON_TOKENS) | words
        if name in ("adapter_json", "adapter_folder"):
            tokens |= (
                methods
                | fields
                | {
                    '"format_version"',
                    '"settings_sha256"',
                    '"weights_sha256"',
                    '"targets"',
                    '"layer_configs"',
                    '"fingerprint_version"',
                }
            )
        if name in ("adapter_folder", "safetensors"):
            tokens |= set(SAFETENSORS_TOKENS)
        if name == "peft_config":
            tokens |= {json.dumps(k) for k in _IGNORED | set(_UNSUPPORTED)} | {
                '"LORA"',
                '"pissa"',
                '"olora"',
                '"gaussian"',
                '"eva"',
                '"(a+)+$"',
                '".*"',
            }
        if name == "config":
            tokens |= (
                set(YAML_TOKENS)
                | methods
                | settings
                | {f"--{s}" for s in settings}
                | {
                    "--no-progress",
                    "--no_progress",
                    "=",
                    ".",
                    "method_config.",
                    "optimizer_config.",
                    "rank_pattern.",
                    "~",
                    "~root",
                    "~nobody/x",
                    "/dev/null",
                    "yes",
                    "off",
                    "none",
                    "adamw",
                    "sgd",
                }
            )
        if name == "loaders":
            tokens |= {'"prompt"', '"answer"', "prompt,answer", '","', "\r\n", "\n", '""', "\ufeff"}
        lines = sorted(_escape(t) for t in tokens)
        (folder / f"{name}.dict").write_text("\n".join(lines) + "\n")


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    shutil.rmtree(CORPUS, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        adapters(tmp)
        peft_files(tmp)
        checkpoint(tmp)
        configs()
        data_files()
    dictionaries()
    for folder in sorted(CORPUS.iterdir()):
        files = list(folder.iterdir())
        print(f"{folder.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
