"""The search file: its schema, checked whole before anything runs, and the space it samples.

    search = load_search("examples/search-competition.yaml", out=None, trials=None)   # a Search
    model = spec_text(search.spec, {"w1": 16, "pool1": ""})     # the template filled, "" tokens dropped
    value = suggest(trial, "lr", {"float": [0.05, 0.4], "log": True})   # one Optuna distribution

A search file is YAML:

    description: small CIFAR-10 nets for the class competition       # optional
    base:                       # TrainConfig keys every trial trains with (or recipe: NAME, then keys)
      dataset: cifar10
      epochs: 4
    space:                      # spec: a model spec, or a zoo model's call form: "fastnet(widths=[{w1}, 64, 128])"
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
    prune: hyperband            # stop weak trials at rungs of epochs: hyperband | halving | median (true) | false
    fidelity: {min_epochs: 1, reduction_factor: 3}   # the rungs (max_epochs: the base's epochs)
    bound_prune: true           # a candidate whose cycles / 300000 alone reach the best metric never trains
    final: {top_k: 3, epochs: 30, seeds: 1}          # the best candidates retrained in full (stages.py)
    seed: 0
    stale_after: 30             # a trial whose worker went silent this long (killed) is run again

Every problem in the file is one line naming it, with the file's line and key (a CnnlabError), before
anything is written: each distribution is checked as Optuna will draw it (bounds, step, log), and a
distribution under `train` against its config key's type and range. docs/search.md describes each key.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.cost.report import DEFAULT_MAX_ACTIVATION
from cnnlab.dirs.search import SearchDir
from cnnlab.errors import CnnlabError
from cnnlab.io import load_yaml_mapping
from cnnlab.models.spec import looks_like_spec
from cnnlab.workflows.search.objectives import OBJECTIVES
from cnnlab.workflows.search.stages import Final, Pruning, load_final, load_pruning

SAMPLERS = ("tpe", "nsga2", "random")
KEYS = {"description", "base", "space", "objective", "constraints", "trials", "sampler", "prune", "fidelity",
        "bound_prune", "final", "seed", "stale_after"}
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
    pruning: Pruning = field(default_factory=Pruning)
    final: Final | None = None  # no final stage: the search's best trial is the result

    @property
    def dir(self) -> SearchDir:
        return SearchDir(self.out)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o].direction for o in self.objectives]


class Where:
    """Names a place in the search file for an error line: "FILE line N: space.train.lr"."""

    def __init__(self, path: Path):
        import yaml

        self.path, self.lines = path, {}
        try:
            self._walk(yaml.compose(path.read_text()), ())
        except (OSError, yaml.YAMLError):  # changed since it was read: the lines are left out
            self.lines = {}

    def _walk(self, node, keys):
        import yaml

        if isinstance(node, yaml.MappingNode) and len(keys) < 4:
            for k, v in node.value:
                self.lines[keys + (str(k.value),)] = k.start_mark.line + 1
                self._walk(v, keys + (str(k.value),))

    def __call__(self, *keys) -> str:
        keys = tuple(str(k) for k in keys)
        for n in range(len(keys), 0, -1):
            if keys[:n] in self.lines:
                return f"{self.path} line {self.lines[keys[:n]]}: {'.'.join(keys)}"
        return f"{self.path}: {'.'.join(keys)}" if keys else str(self.path)


DIST_OPTIONS = {"choices": set(), "int": {"step", "log"}, "float": {"step", "log"}}
FORMS = "{choices: [a, b, ...]}, {int: [low, high]} or {float: [low, high]} (with step: or log: true)"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_dist(d, where: str) -> list:
    """Raise a one-line error unless `d` is a distribution Optuna can draw from: {choices: [...]},
    {int: [low, high]} or {float: [low, high]}, optionally with step or log. Returns the values
    that bound it (the choices, or low and high) for the checks of the key it sets."""
    if not isinstance(d, dict) or len(set(DIST_OPTIONS) & set(d)) != 1:
        raise CnnlabError(f"{where} must be {FORMS}, got {d!r}")
    kind = next(k for k in DIST_OPTIONS if k in d)
    extra = sorted(set(d) - {kind} - DIST_OPTIONS[kind])
    if extra:
        takes = f"takes {' and '.join(sorted(DIST_OPTIONS[kind]))}" if DIST_OPTIONS[kind] else "takes no other key"
        raise CnnlabError(f"{where}: unknown key '{extra[0]}' ({kind} {takes})")
    if kind == "choices":
        choices = d["choices"]
        if not isinstance(choices, list) or not choices:
            raise CnnlabError(f"{where}: choices must be a non-empty list, e.g. [8, 16, 32], got {choices!r}")
        for c in choices:
            if c is not None and not isinstance(c, (str, int, float)):
                raise CnnlabError(f"{where}: each choice must be a number, a string, true/false or null, got {c!r}")
        return list(choices)
    lo_hi, word = d[kind], "whole numbers" if kind == "int" else "numbers"
    if not (isinstance(lo_hi, list) and len(lo_hi) == 2 and all(_number(v) for v in lo_hi)
            and (kind == "float" or all(float(v).is_integer() for v in lo_hi))):
        raise CnnlabError(f"{where}: {kind} must be [low, high], two {word}, got {lo_hi!r}")
    lo, hi = lo_hi
    if lo > hi:
        raise CnnlabError(f"{where}: {kind} range [{lo}, {hi}] has low > high: write it as [{hi}, {lo}]")
    log, step = d.get("log", False), d.get("step")
    if not isinstance(log, bool):
        raise CnnlabError(f"{where}: log must be true or false, got {log!r}")
    if log and lo <= 0:
        raise CnnlabError(f"{where}: log: true needs a positive range, got low = {lo}: use e.g. [{hi / 100:g}, {hi:g}]"
                          if hi > 0 else f"{where}: log: true needs a positive range, got [{lo}, {hi}]")
    if step is not None:
        if not _number(step) or step <= 0 or (kind == "int" and not float(step).is_integer()):
            whole = "whole " if kind == "int" else ""
            raise CnnlabError(f"{where}: step must be a positive {whole}number, got {step!r}")
        if log:
            raise CnnlabError(f"{where}: step and log: true cannot go together: drop one")
        if hi > lo and step > hi - lo:
            raise CnnlabError(f"{where}: step {step} is larger than the range [{lo}, {hi}]: use a step of at most "
                              f"{hi - lo:g}, or widen the range")
        steps = (hi - lo) / step
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            top = lo + math.floor(steps) * step
            raise CnnlabError(f"{where}: the range [{lo}, {hi}] is not a whole number of steps of {step}: use "
                              f"high = {top:g} or {top + step:g}")
    return [float(lo), float(hi)] if kind == "float" else [int(lo), int(hi)]


def check_train_values(key: str, values: list, where: str):
    """Every value `values` bounds must suit the training config key `key` (its type and range)."""
    from cnnlab.config import check_type
    from cnnlab.train.validate import RANGES

    for v in values:
        v = check_type(key, v, where)
        ok, what = RANGES.get(key, (None, None))
        if ok is not None and v is not None and not ok(v):
            raise CnnlabError(f"{where}: {key} must be {what}, and this range holds {v!r}")


def _mapping(d, key, where: str) -> dict:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise CnnlabError(f"{where} must be a mapping of keys to values, got {v!r}")
    return dict(v)


def load_search(path, out=None, trials: int | None = None, final_top_k: int | None = None) -> Search:
    """The search file, checked whole before anything runs (one line naming the problem, with the
    file's line and key). `trials` (the --trials flag) replaces the file's `trials`, `final_top_k`
    (--final-top-k) the final stage's top_k."""
    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{path} is a directory: give the search file (YAML), e.g. examples/search-competition.yaml")
    d = load_yaml_mapping(path, "search file")
    at = Where(path)
    unknown = sorted(str(k) for k in set(d) - KEYS)
    if unknown:
        raise CnnlabError(f"{at(unknown[0])}: unknown key (a search file has {', '.join(sorted(KEYS))})")
    base = _mapping(d, "base", at("base"))
    if "recipe" in base:
        from cnnlab.recipes import load_recipe

        base = {**load_recipe(base.pop("recipe")), **base}
    space = _mapping(d, "space", at("space"))
    if not isinstance(space.get("spec"), str):
        raise CnnlabError(f"{at('space')} needs 'spec', a model spec with {{name}} placeholders (or a zoo model's "
                          "call form, e.g. fastnet(widths=[{w1}, 64, 128]))")
    params, train = _mapping(space, "params", at("space", "params")), _mapping(space, "train", at("space", "train"))
    for name, dist in params.items():
        check_dist(dist, at("space", "params", str(name)))
    bad = sorted(set(train) - set(TrainConfig.__dataclass_fields__))
    if bad:
        raise CnnlabError(f"{at('space', 'train', str(bad[0]))}: not a training config key, so it cannot be searched "
                          "(`cnnlab train --help` lists them)")
    for key, dist in train.items():
        where = at("space", "train", key)
        check_train_values(key, check_dist(dist, where), where)
    fields = {f for _, f, _, _ in string.Formatter().parse(space["spec"]) if f}
    if fields - set(params):
        raise CnnlabError(f"{at('space', 'spec')}: the spec uses {{{sorted(fields - set(params))[0]}}}, which "
                          "space.params does not define")
    if set(params) - fields:
        raise CnnlabError(f"{at('space', 'params')}: space.params defines '{sorted(set(params) - fields)[0]}', which "
                          "the spec never uses")
    objectives = d.get("objective", "competition")
    objectives = [objectives] if isinstance(objectives, str) else objectives
    if not isinstance(objectives, list) or not objectives:
        raise CnnlabError(f"{at('objective')} must be an objective's name or a list of names: choose from "
                          f"{', '.join(OBJECTIVES)}")
    for o in objectives:
        if o not in OBJECTIVES:
            raise CnnlabError(f"{at('objective')}: unknown objective '{o}': choose from {', '.join(OBJECTIVES)}")
    constraints = _mapping(d, "constraints", at("constraints"))
    if set(constraints) - set(CONSTRAINTS):
        raise CnnlabError(f"{at('constraints')}: constraints take max_activation (bytes) and max_params")
    for key, v in constraints.items():
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            raise CnnlabError(f"{at('constraints', key)} must be a positive whole number, got {v!r}")
    sampler = d.get("sampler", "tpe" if len(objectives) == 1 else "nsga2")
    if sampler not in SAMPLERS:
        raise CnnlabError(f"{at('sampler')}: unknown sampler '{sampler}': choose from {', '.join(SAMPLERS)}")
    n = trials if trials is not None else d.get("trials", 20)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        where = "--trials" if trials is not None else at("trials")
        raise CnnlabError(f"{where} must be a positive integer (finished trials to reach), got {n!r}")
    stale = d.get("stale_after", 30)
    if not _number(stale) or stale < 2:
        raise CnnlabError(f"{at('stale_after')} must be a number of seconds, at least 2, got {stale!r}")
    seed = d.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise CnnlabError(f"{at('seed')} must be a non-negative integer, got {seed!r}")
    epochs = TrainConfig.from_dict({**base, "out": None}, where=at("base")).epochs  # types of the base, now
    pruning = load_pruning(d, at, epochs, objectives)
    if pruning.max_epochs is not None:
        base["epochs"] = pruning.max_epochs
    final = load_final(d, at, base, set(train), final_top_k)
    search = Search(path, base, space["spec"], params, train, objectives,
                    int(constraints.get("max_activation") or DEFAULT_MAX_ACTIVATION), constraints.get("max_params"),
                    n, sampler, pruning.pruner != "none", seed, str(d.get("description", "")), float(stale),
                    Path(out) if out else SearchDir.default_for(path).path, pruning, final)
    return search


def suggest(trial, name, d):
    """One value of a checked distribution (see check_dist), drawn by an Optuna trial."""
    if "choices" in d:
        return trial.suggest_categorical(name, d["choices"])
    if "int" in d:
        return trial.suggest_int(name, int(d["int"][0]), int(d["int"][1]), step=int(d.get("step", 1)),
                                 log=bool(d.get("log")))
    return trial.suggest_float(name, float(d["float"][0]), float(d["float"][1]), step=d.get("step"),
                               log=bool(d.get("log")))


def spec_text(template: str, values: dict) -> str:
    """The template with its placeholders filled; empty tokens ("" choices) dropped (a spec's; a
    zoo model's call form is left as filled)."""
    text = template.format(**{k: "" if v is None else v for k, v in values.items()})
    if not looks_like_spec(text):  # a zoo model's call form (or a bare name): nothing to drop
        return text.strip()
    text = re.sub(r"-{2,}", "-", text)
    text = re.sub(r"\[-", "[", re.sub(r"-\]", "]", text)).strip("-")
    return text


def sample(search: Search, trial) -> tuple[str, dict]:
    """(model spec, training overrides) of one trial: every distribution of the space drawn once."""
    values = {name: suggest(trial, name, d) for name, d in search.params.items()}
    overrides = {name: suggest(trial, name, d) for name, d in search.train.items()}
    return spec_text(search.spec, values), overrides
