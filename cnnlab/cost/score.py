"""The CIFAR-10 class competition's scoring rules (pure: figures in, points out).

Hard constraints: peak activation (competition rule) under 1 MB and test error under 50%;
a run that breaks one scores 0 points. Otherwise points are the sum of
    error      40-49 / 30-39 / 20-29 / 10-19 / 5-9 / <5 %      -> 30 / 40 / 50 / 60 / 70 / 80
    energy     < 2 / 1.5 / 1 / 0.5 mJ                          -> 5 / 10 / 15 / 20
    latency    < 1M / 0.5M / 0.25M / 0.1M cycles               -> 5 / 10 / 15 / 20
and the ranking metric (lower is better) is error_percent / 12 + cycles / 300000.

The error band is decided on exact counts when they are given (wrong * 100 < limit * images),
so 80.00 % accuracy is 20 % error exactly, not 19.9999988 % after float32 rounding.
Scoring a trained run (evaluating it, costing its model) is `cnnlab.workflows.measure.score`.
"""

from __future__ import annotations

from cnnlab.cost.report import DEFAULT_MAX_ACTIVATION

ERROR_BANDS = ((5, 80), (10, 70), (20, 60), (30, 50), (40, 40), (50, 30))  # (error % below, points)
ENERGY_BANDS = ((0.5, 20), (1.0, 15), (1.5, 10), (2.0, 5))  # (mJ below, points)
CYCLE_BANDS = ((100_000, 20), (250_000, 15), (500_000, 10), (1_000_000, 5))  # (cycles below, points)


def _band(value, bands):
    for limit, points in bands:
        if value < limit:
            return points
    return 0


def ranking_metric(error_percent: float, cycles: float) -> float:
    return error_percent / 12 + cycles / 300_000


def _error_band(error_percent: float, counts) -> int:
    """Points for the error; with counts = (wrong, images) the comparison is exact."""
    if counts is None:
        return _band(error_percent, ERROR_BANDS)
    wrong, images = counts
    for limit, points in ERROR_BANDS:
        if wrong * 100 < limit * images:
            return points
    return 0


def rubric(error_percent: float, energy_mj: float, cycles: float, peak_activation: int,
           max_activation: int = DEFAULT_MAX_ACTIVATION, counts: tuple | None = None) -> dict:
    """Points and the ranking metric. `counts=(wrong, images)` bands the error exactly."""
    failed = []
    if peak_activation >= max_activation:
        failed.append(f"peak activation {peak_activation:,} B >= {max_activation:,} B")
    too_wrong = counts[0] * 2 >= counts[1] if counts else error_percent >= 50
    if too_wrong:
        failed.append(f"test error {error_percent:.2f}% >= 50%")
    pts = {"error": _error_band(error_percent, counts), "energy": _band(energy_mj, ENERGY_BANDS),
           "latency": _band(cycles, CYCLE_BANDS)}
    total = 0 if failed else sum(pts.values())
    return {"points": total, "points_by_part": pts, "hard_constraints_failed": failed,
            "metric": ranking_metric(error_percent, cycles)}
