"""`rankwise merge`: combine fine-tunes of one base model into one adapter or model.

Inputs are rankwise or PEFT adapter folders, or Hugging Face model folders, all of BASE. A low-rank result
(cat, svd; linear and task-arithmetic of plain LoRAs) is saved as a LoRA adapter folder, anything else as
a model folder; both load back with rankwise's loaders (load_adapter, rankwise.models.load).
"""

from __future__ import annotations

import argparse
import json

EXAMPLES = """examples:
  rankwise merge smollm2-135m --inputs runs/a/adapter runs/b/adapter --method ties --density 0.5
  rankwise merge smollm2-135m --inputs runs/a/adapter runs/b/adapter --method cat --weights 0.6 0.4
  rankwise merge smollm2-135m --inputs models/a models/b --method orthomerge --variant C --out out/ortho"""


def add_parser(sub) -> None:
    parser = sub.add_parser("merge", help="combine fine-tunes (adapters or models) of one base model",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("base", metavar="BASE", help="the base model: an embedded name or a local folder")
    parser.add_argument("--inputs", nargs="+", required=True, metavar="DIR", help="adapter or model folders")
    parser.add_argument("--method", required=True,
                        help="linear, task-arithmetic, ties, dare-linear, dare-ties, svd, cat or orthomerge")
    parser.add_argument("--weights", nargs="+", type=float, metavar="W", help="one weight per input [1 each]")
    parser.add_argument("--density", type=float, help="ties/dare: the share of each update kept, in (0, 1]")
    parser.add_argument("--rank", type=int, help="svd: the merged rank")
    parser.add_argument("--seed", type=int, help="dare: the seed of the random masks [0]")
    parser.add_argument("--variant", choices=("G", "C"), help="orthomerge: G (whole update) or C (conflicts)")
    parser.add_argument("--residual", choices=("ta", "ties"), help="orthomerge: how residuals merge [ta]")
    parser.add_argument("--out", default="merged", metavar="DIR", help="output folder [merged]")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from ..errors import AdapterFileError
    from ..io import save_adapter, save_model
    from ..io.atomic import check_writable
    from ..io.model_folder import is_model_folder
    from ..merging import MERGERS, merge_adapters
    from ..models import load

    MERGERS.get(args.method)  # an unknown method fails before the base model loads
    out = Path(args.out)
    check_writable(out)
    if out.is_dir() and any(out.iterdir()) and not ((out / "adapter.json").is_file() or is_model_folder(out)):
        raise AdapterFileError(f"{out} holds other files; a save replaces the whole folder, so give --out an "
                               "empty or new folder (or an earlier merge's).")
    fields = {key: getattr(args, key) for key in ("weights", "density", "rank", "seed", "variant", "residual")
              if getattr(args, key) is not None}
    model, tokenizer = load(args.base)
    result = merge_adapters(model, args.inputs, args.method, **fields)
    if result["kind"] == "adapter":
        save_adapter(model, out, "merged")
    else:
        save_model(model, out, tokenizer)
    result["output"] = str(out)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        what = f"a rank-{result['rank']} LoRA adapter" if result["kind"] == "adapter" else "a model folder"
        print(f"merged {len(args.inputs)} inputs with {args.method} over {result['layers']} layers: {what} "
              f"in {out}")
    return 0
