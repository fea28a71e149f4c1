"""The search's objectives: one registry, each objective one function of a trial's measured figures.

    OBJECTIVES["competition"].value({"error": 14.0, "cycles": 90_000})    # 14 / 12 + 0.3
    objective_values(["error", "cycles"], figures)                         # [14.0, 90000.0]

A trial's figures (a dict) hold `error` (validation error, %), the cost model's `cycles`,
`energy_mj`, `macs`, `params` and `peak_activation` of the network the trial trains, and
`latency_ms` when an objective in the search asks for it (measured after training). A search file
names objectives by their registered names; the study minimises or maximises each by its direction.

Adding an objective is one decorated function:

    @objective("error_x_params", "validation error % times parameters / 1000")
    def error_x_params(f):
        return f["error"] * f["params"] / 1000
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from cnnlab.cost.score import ranking_metric

DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class Objective:
    name: str
    description: str
    direction: str  # "minimize" or "maximize", Optuna's words
    value: Callable[[dict], float]
    needs_latency: bool = False  # measured on this CPU after training (batch 1, median of 20)


OBJECTIVES: dict[str, Objective] = {}


def objective(name: str, description: str, direction: str = "minimize", needs_latency: bool = False):
    """Register the decorated function (figures -> value) as the objective `name`."""
    if direction not in DIRECTIONS:
        raise ValueError(f"objective {name}: direction must be one of {DIRECTIONS}, got {direction!r}")

    def register(fn):
        OBJECTIVES[name] = Objective(name, description, direction, fn, needs_latency)
        return fn

    return register


def objective_values(names, figures: dict) -> list[float]:
    """The values of the objectives `names` for one trial's figures, in order."""
    return [float(OBJECTIVES[n].value(figures)) for n in names]


def needs_latency(names) -> bool:
    return any(OBJECTIVES[n].needs_latency for n in names)


@objective("competition", "error_percent / 12 + cycles / 300000 (the class competition's ranking metric)")
def competition(f):
    return ranking_metric(f["error"], f["cycles"])


@objective("error", "validation error, %")
def error(f):
    return f["error"]


@objective("cycles", "accelerator cycles per image (cnnlab.cost)")
def cycles(f):
    return f["cycles"]


@objective("energy", "accelerator energy per image, mJ")
def energy(f):
    return f["energy_mj"]


@objective("macs", "multiply-accumulates per image")
def macs(f):
    return f["macs"]


@objective("params", "parameters")
def params(f):
    return f["params"]


@objective("latency", "measured CPU latency per image, ms (batch 1, median of 20)", needs_latency=True)
def latency(f):
    return f["latency_ms"]
