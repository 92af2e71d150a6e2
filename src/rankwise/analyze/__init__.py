"""Read-only diagnostics: spectra, effective/stable rank, power-law α (WeightWatcher), WeLore labels,
intruder dimensions between a base and a fine-tune, and an HTML/PNG/JSON report.

    result = analyze_weights(model)                          # per layer + summary
    result["compare"] = compare(model, "runs/adapter")       # intruder dimensions vs a fine-tune
    write_report(result, "runs/analysis")                    # report.json, *.png, report.html
"""

from .intruders import compare, intruder_dimensions, load_tuned
from .powerlaw import esd, powerlaw_alpha
from .report import write_report
from .spectra import effective_rank, singular_values, stable_rank, welore_label, welore_tau
from .weights import analyze_weights

__all__ = [
    "analyze_weights", "compare", "effective_rank", "esd", "intruder_dimensions", "load_tuned",
    "powerlaw_alpha", "singular_values", "stable_rank", "welore_label", "welore_tau", "write_report",
]
