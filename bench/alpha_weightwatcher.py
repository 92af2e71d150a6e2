"""rankwise's power-law α against the `weightwatcher` package on SmolLM2-135M's own matrices: every
projection (q, k, v, o, gate, up, down) of blocks 0, 15 and 29, 21 matrices.

    OMP_NUM_THREADS=1 python bench/alpha_weightwatcher.py

WeightWatcher takes each SVD in float64 and rankwise in float32, so α differs in the last digits; the
script records, per matrix, both α, both tail sizes and the relative difference, and the max and median
over the 21. tests/analyze/test_analyze_weightwatcher.py asserts the same agreement on blocks 0 and 29.
Writes bench/results/alpha_weightwatcher.json. About a minute.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

import torch
import weightwatcher as ww

from rankwise.analyze import esd, powerlaw_alpha, singular_values
from rankwise.io import write_json
from rankwise.models import load

BLOCKS = (0, 15, 29)
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def main() -> None:
    model, _ = load("smollm2-135m")
    names, copies = [], []  # plain Linear copies: WeightWatcher then sees exactly these matrices
    for block in BLOCKS:
        for projection in PROJECTIONS:
            leaf = model.get_submodule(f"model.layers.{block}.{projection}")
            copy = torch.nn.Linear(leaf.in_features, leaf.out_features, bias=False)
            copy.weight.data.copy_(leaf.weight.data)
            names.append(f"model.layers.{block}.{projection}")
            copies.append(copy)
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    frame = ww.WeightWatcher(model=torch.nn.Sequential(*copies)).analyze(randomize=False, mp_fit=False)
    rows = []
    for name, layer, (_, theirs) in zip(names, copies, frame.iterrows()):
        ours = powerlaw_alpha(esd(singular_values(layer.weight)))
        rows.append({"layer": name, "alpha": ours["alpha"], "weightwatcher_alpha": float(theirs["alpha"]),
                     "n_tail": ours["n_tail"], "weightwatcher_n_tail": int(theirs["num_pl_spikes"]),
                     "relative_difference": abs(ours["alpha"] - theirs["alpha"]) / abs(theirs["alpha"])})
    differences = [row["relative_difference"] for row in rows]
    result = {"matrices": len(rows), "max_relative_difference": max(differences),
              "median_relative_difference": statistics.median(differences),
              "same_tail_size": sum(r["n_tail"] == r["weightwatcher_n_tail"] for r in rows), "layers": rows}
    print({k: v for k, v in result.items() if k != "layers"})
    write_json(Path(__file__).parent / "results" / "alpha_weightwatcher.json", result)


if __name__ == "__main__":
    main()
