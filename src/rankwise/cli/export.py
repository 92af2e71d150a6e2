"""`rankwise export`: write a saved adapter, with its base model, for tools that do not have rankwise.

--to peft writes PEFT's adapter folder (LoRA, rsLoRA, DoRA, PiSSA, LoRA-XS), --to merged a Hugging Face
model folder with the adapter folded into the weights (plain transformers loads it), --to gguf one GGUF
file of those merged weights (Llama-architecture models; llama.cpp and transformers' GGUF reader load it).
The --out folder is replaced as a whole, so it must be new, empty, or an earlier export of the same kind.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  rankwise export runs/lora/adapter --model smollm2-135m --to peft --out out/lora-peft
  rankwise export runs/dora/adapter --model smollm2-135m --to merged --out out/smollm2-dora
  rankwise export runs/lora/adapter --model smollm2-135m --to gguf --dtype f16 --out out/smollm2-gguf"""


def add_parser(sub) -> None:
    parser = sub.add_parser("export", help="write an adapter as PEFT's format, a merged HF model or a GGUF",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("adapter", metavar="ADAPTER", help="an adapter folder (rankwise or PEFT format)")
    parser.add_argument("--model", required=True, help="its base model: smollm2-135m, tiny-llama or a local "
                                                       "HF folder")
    parser.add_argument("--to", required=True, choices=("peft", "merged", "gguf"), help="the output format")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--dtype", choices=("f32", "f16"), help="merged and gguf: weight precision [f32]")
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="load the adapter even if it was saved for another base model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ..adapters import ADAPTERS
    from ..errors import ConfigError, NotMergeable
    from ..io import load_adapter, read_adapter
    from ..io.atomic import check_writable
    from ..io.export import check_destination, export_model
    from ..io.gguf_export import gguf_file_name
    from ..io.peft_format import EXPORTABLE
    from ..models import load

    # Everything that can be checked without the model is, before it loads.
    saved = read_adapter(args.adapter)
    check_destination(args.out, args.to, args.dtype)
    if args.to == "peft" and saved.method not in EXPORTABLE:
        raise ConfigError(f"PEFT has no exact equivalent of {saved.method}; --to peft exports "
                          f"{', '.join(EXPORTABLE)}. Use --to merged, or keep the rankwise adapter.")
    if args.to != "peft" and not ADAPTERS.get(saved.method).mergeable:
        raise NotMergeable(f"{saved.method} cannot be merged into the base weights, which --to {args.to} "
                           "needs; keep the rankwise adapter.")
    check_writable(args.out)
    model, tokenizer = load(args.model)
    load_adapter(model, args.adapter, allow_base_mismatch=args.allow_base_mismatch)
    out = export_model(model.eval(), args.out, args.to, tokenizer, args.dtype)
    where = out / gguf_file_name(args.dtype or "f32") if args.to == "gguf" else out
    print(f"exported the {saved.method} adapter {args.adapter} on {args.model} as {args.to}: {where}")
    return 0
