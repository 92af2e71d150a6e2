"""Read-only diagnostics: spectra, effective/stable rank, power-law α (WeightWatcher), WeLore labels,
intruder dimensions between a base and a fine-tune, layer-wise gradient spectra of examples (data
quality), attention-head composition (Talking Heads), residual-stream norms by depth, a per-layer
LoRA rank suggestion within a parameter budget, and an HTML/PNG/JSON report.

    result = analyze_weights(model)                          # per layer + summary
    result["compare"] = {"runs/r8": compare(model, "runs/r8/adapter")}   # intruder dimensions vs fine-tunes
    write_report(result, "runs/analysis")                    # report.json, *.png, report.html
    suggest_ranks(result["layers"])["snippet"]               # per-layer LoRA ranks at a rank-8 budget
"""

from .gradients import gradient_spectra, rank_examples
from .heads import head_composition
from .intruders import compare, intruder_dimensions, load_tuned
from .powerlaw import esd, powerlaw_alpha
from .report import write_report
from .residual import residual_norms
from .spectra import effective_rank, singular_values, stable_rank, welore_label, welore_tau
from .suggest import batch_gradient_spectra, suggest_ranks
from .weights import analyze_weights

__all__ = [
    "analyze_weights", "batch_gradient_spectra", "compare", "effective_rank", "esd", "gradient_spectra",
    "head_composition", "intruder_dimensions", "load_tuned", "powerlaw_alpha", "rank_examples",
    "residual_norms", "singular_values", "stable_rank", "suggest_ranks", "welore_label", "welore_tau",
    "write_report",
]
