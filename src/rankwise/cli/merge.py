"""`rankwise merge`: combine fine-tunes of one base model into one adapter or model.

Inputs are rankwise or PEFT adapter folders, or Hugging Face model folders, all of BASE. A low-rank result
(cat, svd; linear and task-arithmetic of plain LoRAs) is saved as a LoRA adapter folder, anything else as
a model folder; both load back with rankwise's loaders (load_adapter, rankwise.models.load). rmm saves a
basis of --rank K models instead, from which --revert TASK --basis DIR rebuilds one input's adapter.
"""

from __future__ import annotations

import argparse
import json

EXAMPLES = """examples:
  rankwise merge smollm2-135m --inputs runs/a/adapter runs/b/adapter --method ties --density 0.5
  rankwise merge smollm2-135m --inputs runs/a/adapter runs/b/adapter --method cat --weights 0.6 0.4
  rankwise merge smollm2-135m --inputs models/a models/b --method orthomerge --variant C --out out/ortho
  rankwise merge smollm2-135m --inputs runs/a/adapter runs/b/adapter runs/c/adapter --method rmm --rank 2
  rankwise merge smollm2-135m --revert 2 --basis merged --out out/task-2"""


def add_parser(sub) -> None:
    parser = sub.add_parser("merge", help="combine fine-tunes (adapters or models) of one base model",
                            description=__doc__.split(":", 1)[1].strip(), epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("base", metavar="BASE", help="the base model: an embedded name or a local folder")
    parser.add_argument("--inputs", nargs="+", metavar="DIR", help="adapter or model folders")
    parser.add_argument("--method", help="linear, task-arithmetic, ties, dare-linear, dare-ties, svd, cat, "
                                         "orthomerge or rmm")
    parser.add_argument("--revert", metavar="TASK", help="rebuild this input (1-based number or folder) from "
                                                         "the RMM basis in --basis")
    parser.add_argument("--basis", metavar="DIR", help="the folder `--method rmm` wrote")
    parser.add_argument("--weights", nargs="+", type=float, metavar="W", help="one weight per input [1 each]")
    parser.add_argument("--density", type=float, help="ties/dare: the share of each update kept, in (0, 1]")
    parser.add_argument("--rank", type=int, help="svd: the merged rank; rmm: the basis size k [inputs - 1]")
    parser.add_argument("--seed", type=int, help="dare: the seed of the random masks [0]")
    parser.add_argument("--variant", choices=("G", "C"), help="orthomerge: G (whole update) or C (conflicts)")
    parser.add_argument("--residual", choices=("ta", "ties"), help="orthomerge: how residuals merge [ta]")
    parser.add_argument("--eval", nargs="+", metavar="TASK", help="one bundled task per input: report each "
                        "input's and the merge's exact match on it, and held-out perplexity (forgetting)")
    parser.add_argument("--eval-limit", type=int, default=50, metavar="N", help="test examples per task [50]")
    parser.add_argument("--out", default="merged", metavar="DIR", help="output folder [merged]")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from ..errors import AdapterFileError, ConfigError
    from ..io import save_adapter, save_model
    from ..io.atomic import check_writable
    from ..io.model_folder import is_model_folder
    from ..merging import MERGERS, merge_adapters, rmm
    from ..models import load

    if args.revert is not None:
        if args.basis is None or args.inputs or args.method:
            raise ConfigError("--revert TASK takes --basis DIR (and --out), not --inputs or --method.")
    elif not args.inputs or not args.method:
        raise ConfigError("give --inputs DIR ... and --method NAME (or --revert TASK --basis DIR).")
    else:
        MERGERS.get(args.method)  # an unknown method fails before the base model loads
    if args.eval:
        from ..data import list_tasks

        if args.revert is not None or len(args.eval) != len(args.inputs):
            raise ConfigError(f"--eval takes one bundled task per input ({len(args.inputs or [])}), in "
                              "order.")
        unknown = [task for task in args.eval if task not in list_tasks()]
        if unknown:
            raise ConfigError(f"unknown task(s) {unknown}; bundled tasks: {', '.join(list_tasks())}.")
    out = Path(args.out)
    check_writable(out)
    previous = (out / "adapter.json").is_file() or (out / "rmm.json").is_file() or is_model_folder(out)
    if out.is_dir() and any(out.iterdir()) and not previous:
        raise AdapterFileError(f"{out} holds other files; a save replaces the whole folder, so give --out an "
                               "empty or new folder (or an earlier merge's).")
    fields = {key: getattr(args, key) for key in ("weights", "density", "rank", "seed", "variant", "residual")
              if getattr(args, key) is not None}
    model, tokenizer = load(args.base)
    if args.revert is not None:
        result = rmm.revert(model, args.basis, args.revert)
        save_adapter(model, out, "reverted")
        print(f"rebuilt {result['task']} ({result['layers']} layers) from {args.basis}: adapter in {out}")
        return 0
    result = merge_adapters(model, args.inputs, args.method, **fields)
    if result["kind"] == "adapter":
        save_adapter(model, out, "merged")
    elif result["kind"] == "basis":
        rmm.save_basis(out, result.pop("basis"), result["inputs"], result["rank"])
    else:
        save_model(model, out, tokenizer)
    result["output"] = str(out)
    if args.eval:
        result["evaluation"] = _evaluate(args, model, tokenizer, result["kind"], out)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        what = {"adapter": f"a rank-{result['rank']} LoRA adapter", "model": "a model folder",
                "basis": f"an RMM basis of {result['rank']} models"}[result["kind"]]
        print(f"merged {len(args.inputs)} inputs with {args.method} over {result['layers']} layers: {what} "
              f"in {out}")
        for row in result.get("evaluation", {}).get("tasks", []):
            print(f"  {row['task']:<16} expert {row['expert']:.3f}   merged {row['merged']:.3f}")
        if "evaluation" in result:
            ppl = result["evaluation"]["perplexity"]
            print(f"  held-out perplexity: base {ppl['base']:.2f}, experts "
                  f"{', '.join(f'{p:.2f}' for p in ppl['experts'])}, merged "
                  f"{', '.join(f'{p:.2f}' for p in ppl['merged'])}")
    return 0


def _evaluate(args, merged, tokenizer, kind: str, out) -> dict:
    """Each input's own score and the merge's on its task, and held-out perplexity (merging.evaluate)."""
    from pathlib import Path

    from ..io import load_adapter
    from ..merging import rmm
    from ..merging.evaluate import evaluate_merge, score_experts
    from ..models import load

    def fresh():
        return load(args.base)[0]

    def expert(index: int):
        source = Path(args.inputs[index])
        if (source / "adapter.json").is_file() or (source / "adapter_config.json").is_file():
            return load_adapter(fresh(), source)
        return load(str(source))[0]

    def merged_for(index: int):
        if kind != "basis":
            return merged
        model = fresh()
        rmm.revert(model, out, index + 1)
        return model

    experts = score_experts(expert, tokenizer, args.eval, args.eval_limit, progress=not args.json)
    return evaluate_merge(experts, merged_for, fresh(), tokenizer, args.eval, args.eval_limit,
                          progress=not args.json)
