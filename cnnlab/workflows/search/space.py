"""The search file: its schema, checked whole before anything runs, and the space it samples.

    search = load_search("examples/search-competition.yaml", out=None, trials=None)   # a Search
    model = spec_text(search.spec, {"w1": 16, "pool1": ""})     # the template filled, "" tokens dropped
    value = suggest(trial, "lr", {"float": [0.05, 0.4], "log": True})   # one Optuna distribution

A search file is YAML:

    description: small CIFAR-10 nets for the class competition       # optional
    base:                       # TrainConfig keys every trial trains with (or recipe: NAME, then keys)
      dataset: cifar10
      epochs: 4
    space:
      spec: "c{w1}k{k1}-bn-relu-{pool1}-[r[c{w2}k3-bn-relu-c{w2}k3-bn]-relu]x{d2}-gap"
      params:                   # each {name} in the spec: choices, or an int/float range
        w1: {choices: [8, 16, 24]}
        k1: {choices: [3, 5]}
        pool1: {choices: [p2, c16k3s2, ""]}   # "" drops the token: pooling placement is searched too
        w2: {int: [8, 32], step: 8}
        d2: {int: [1, 3]}
      train:                    # TrainConfig keys searched per trial
        lr: {float: [0.02, 0.2], log: true}
    objective: competition      # a name of cnnlab.workflows.search.objectives, or a list (Pareto front)
    constraints: {max_activation: 1000000, max_params: 200000}
    trials: 30
    sampler: tpe                # tpe (one objective) | nsga2 (several) | random
    prune: true                 # stop weak trials early from their validation accuracy (median pruner)
    seed: 0
    stale_after: 30             # a trial whose worker went silent this long (killed) is run again

Every problem in the file is one line naming it (a CnnlabError). docs/search.md describes each key.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.cost.report import DEFAULT_MAX_ACTIVATION
from cnnlab.dirs.search import SearchDir
from cnnlab.errors import CnnlabError
from cnnlab.io import load_yaml_mapping
from cnnlab.workflows.search.objectives import OBJECTIVES

SAMPLERS = ("tpe", "nsga2", "random")
KEYS = {"description", "base", "space", "objective", "constraints", "trials", "sampler", "prune", "seed", "stale_after"}
CONSTRAINTS = ("max_activation", "max_params")


@dataclass
class Search:
    path: Path
    base: dict
    spec: str
    params: dict
    train: dict
    objectives: list
    max_activation: int = DEFAULT_MAX_ACTIVATION
    max_params: int | None = None
    trials: int = 20
    sampler: str = "tpe"
    prune: bool = True
    seed: int = 0
    description: str = ""
    stale_after: float = 30.0  # seconds without a heartbeat after which a worker's trial is run again
    out: Path = field(default=None)

    @property
    def dir(self) -> SearchDir:
        return SearchDir(self.out)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o].direction for o in self.objectives]


def check_dist(name, d, where):
    """A one-line error unless `d` is {choices: [...]}, {int: [lo, hi]} or {float: [lo, hi]}."""
    if not isinstance(d, dict) or len({"choices", "int", "float"} & set(d)) != 1:
        raise CnnlabError(f"{where}: '{name}' must be {{choices: [...]}}, {{int: [lo, hi]}} or {{float: [lo, hi]}}")
    if "choices" in d:
        if not isinstance(d["choices"], list) or not d["choices"]:
            raise CnnlabError(f"{where}: '{name}' choices must be a non-empty list")
        return
    kind = "int" if "int" in d else "float"
    lo_hi = d[kind]
    if not (isinstance(lo_hi, list) and len(lo_hi) == 2 and all(isinstance(v, (int, float)) for v in lo_hi)
            and lo_hi[0] <= lo_hi[1]):
        raise CnnlabError(f"{where}: '{name}' {kind} range must be [low, high] with low <= high, got {lo_hi!r}")
    if d.get("log") and lo_hi[0] <= 0:
        raise CnnlabError(f"{where}: '{name}' has log: true, so its range must be positive")


def load_search(path, out=None, trials: int | None = None) -> Search:
    """The search file, checked whole before anything runs (one line naming the problem)."""
    path = Path(path)
    d = load_yaml_mapping(path, "search file")
    unknown = sorted(set(d) - KEYS)
    if unknown:
        raise CnnlabError(f"{path}: unknown key '{unknown[0]}' (a search file has {', '.join(sorted(KEYS))})")
    base = dict(d.get("base") or {})
    if "recipe" in base:
        from cnnlab.recipes import load_recipe

        base = {**load_recipe(base.pop("recipe")), **base}
    space = d.get("space") or {}
    if not isinstance(space, dict) or not isinstance(space.get("spec"), str):
        raise CnnlabError(f"{path}: 'space' needs 'spec', a model spec with {{name}} placeholders")
    params, train = dict(space.get("params") or {}), dict(space.get("train") or {})
    for name, dist in {**params, **train}.items():
        check_dist(name, dist, str(path))
    fields = {f for _, f, _, _ in string.Formatter().parse(space["spec"]) if f}
    if fields - set(params):
        raise CnnlabError(f"{path}: the spec uses {{{sorted(fields - set(params))[0]}}}, which space.params does not define")
    if set(params) - fields:
        raise CnnlabError(f"{path}: space.params defines '{sorted(set(params) - fields)[0]}', which the spec never uses")
    bad = sorted(set(train) - set(TrainConfig.__dataclass_fields__))
    if bad:
        raise CnnlabError(f"{path}: space.train searches '{bad[0]}', which is not a training config key")
    objectives = d.get("objective", "competition")
    objectives = [objectives] if isinstance(objectives, str) else list(objectives)
    for o in objectives:
        if o not in OBJECTIVES:
            raise CnnlabError(f"{path}: unknown objective '{o}': choose from {', '.join(OBJECTIVES)}")
    constraints = dict(d.get("constraints") or {})
    if set(constraints) - set(CONSTRAINTS):
        raise CnnlabError(f"{path}: constraints take max_activation (bytes) and max_params")
    sampler = d.get("sampler", "tpe" if len(objectives) == 1 else "nsga2")
    if sampler not in SAMPLERS:
        raise CnnlabError(f"{path}: unknown sampler '{sampler}': choose from {', '.join(SAMPLERS)}")
    n = trials if trials is not None else d.get("trials", 20)
    if not isinstance(n, int) or n < 1:
        raise CnnlabError(f"{path}: trials must be a positive integer, got {n!r}")
    stale = d.get("stale_after", 30)
    if not isinstance(stale, (int, float)) or stale < 2:
        raise CnnlabError(f"{path}: stale_after must be a number of seconds, at least 2, got {stale!r}")
    search = Search(path, base, space["spec"], params, train, objectives,
                    int(constraints.get("max_activation", DEFAULT_MAX_ACTIVATION)), constraints.get("max_params"),
                    n, sampler, bool(d.get("prune", True)), int(d.get("seed", 0)), str(d.get("description", "")),
                    float(stale))
    search.out = Path(out) if out else SearchDir.default_for(path).path
    TrainConfig.from_dict({**base, "out": None}, where=f"{path} base")  # types of the base, now
    return search


def suggest(trial, name, d):
    """One value of a checked distribution (see check_dist), drawn by an Optuna trial."""
    if "choices" in d:
        return trial.suggest_categorical(name, d["choices"])
    if "int" in d:
        return trial.suggest_int(name, d["int"][0], d["int"][1], step=d.get("step", 1), log=bool(d.get("log")))
    return trial.suggest_float(name, float(d["float"][0]), float(d["float"][1]), log=bool(d.get("log")))


def spec_text(template: str, values: dict) -> str:
    """The template with its placeholders filled; empty tokens ("" choices) dropped."""
    text = template.format(**{k: "" if v is None else v for k, v in values.items()})
    text = re.sub(r"-{2,}", "-", text)
    text = re.sub(r"\[-", "[", re.sub(r"-\]", "]", text)).strip("-")
    return text


def sample(search: Search, trial) -> tuple[str, dict]:
    """(model spec, training overrides) of one trial: every distribution of the space drawn once."""
    values = {name: suggest(trial, name, d) for name, d in search.params.items()}
    overrides = {name: suggest(trial, name, d) for name, d in search.train.items()}
    return spec_text(search.spec, values), overrides
