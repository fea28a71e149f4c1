"""Cost and hardware analysis: per-layer counts, peak activation, an accelerator model, scores.

    from cnnlab.cost import analyze, Accelerator
    rep = analyze(model, (3, 32, 32))              # per-layer table, totals, peak activation
    rep.totals["macs"], rep.totals["cycles"], rep.totals["energy_pj"], rep.peak_activation
"""

from cnnlab.cost.accelerator import DEFAULT_ACCELERATOR, Accelerator, Problem, layer_cost
from cnnlab.cost.report import CostReport, analyze, format_table

__all__ = ["Accelerator", "CostReport", "DEFAULT_ACCELERATOR", "Problem", "analyze", "format_table", "layer_cost"]
