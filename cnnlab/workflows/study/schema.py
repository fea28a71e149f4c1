"""The study file: parsing it and checking all of it before anything trains.

A study file is YAML:

    description: SGD vs Adam on a small ConvNet        # optional
    base:                                              # TrainConfig keys shared by every run
      model: c32k3-relu-p2-c64k3-relu-p2-fc128-relu
      dataset: cifar10
      epochs: 10
    experiments:                                       # name -> overrides of the base
      sgd:  {optimizer: sgd, lr: 0.05}
      adam: {optimizer: adam}
    seeds: 3                                           # a count (0, 1, 2) or a list [0, 7, 42]
    budget_seconds: 120                                # optional: equal training time, not epochs

    study = load_study("examples/optimizers.yaml", seeds=2, out="runs/opt")
    [(r.experiment, r.seed, r.run_dir) for r in study.runs]    # one StudyRun per experiment x seed

The whole file is checked first: an unknown key, a value of the wrong type, an unknown model,
optimizer or schedule, or schedule/optimizer arguments those do not accept is a CnnlabError
naming its line. Each run's directory is the study directory's (`cnnlab.dirs.StudyDir`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cnnlab.config import TrainConfig, check_type
from cnnlab.errors import CnnlabError
from cnnlab.dirs import StudyDir
from cnnlab.io import compose_yaml, yaml_node_value

STUDY_KEYS = ("base", "description", "experiments", "seeds", "budget_seconds")
SET_BY_STUDY = {"out": "the study places every run under its --out directory",
                "seed": "the study sets seeds: use the top-level `seeds:` key"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class StudyRun:
    experiment: str
    seed: int
    config: TrainConfig
    run_dir: Path


@dataclass
class Study:
    path: Path
    out: Path
    description: str
    base: dict
    experiments: dict  # name -> overrides (plain dicts)
    seeds: list
    budget_seconds: float | None
    runs: list = field(default_factory=list)

    @property
    def dir(self) -> StudyDir:
        """The study directory `out`: its runs, the study file's copy, the table and the curves."""
        return StudyDir(self.out)


def _where(path, node) -> str:
    return f"{path}, line {node.start_mark.line + 1}"


def _mapping(node, path, what):
    if not isinstance(node, yaml.MappingNode):
        raise CnnlabError(f"{_where(path, node)}: {what} must be a mapping of keys to values")
    out = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            raise CnnlabError(f"{_where(path, k)}: keys in {what} must be plain names")
        if k.value in out:
            raise CnnlabError(f"{_where(path, k)}: '{k.value}' appears twice in {what}")
        out[k.value] = (k, v)
    return out


def _value(node):
    return yaml_node_value(node)


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _check_settings(settings: dict, path, what):
    """Each key of a base/experiment mapping: known, not study-owned, right type."""
    for key, (knode, vnode) in settings.items():
        if key in SET_BY_STUDY:
            raise CnnlabError(f"{_where(path, knode)}: '{key}' cannot be set in a study ({SET_BY_STUDY[key]})")
        if key not in _FIELDS:
            import difflib

            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise CnnlabError(f"{_where(path, knode)}: unknown key '{key}' in {what}{hint}; "
                              f"valid keys are {', '.join(sorted(set(_FIELDS) - set(SET_BY_STUDY)))}")
        try:
            check_type(key, _value(vnode), what)
        except CnnlabError as e:
            raise CnnlabError(f"{_where(path, vnode)}: {e}") from None


def check_config(config: TrainConfig):
    """The one validation every run gets (cnnlab.train.validate), before anything trains."""
    from cnnlab.train.validate import validate

    validate(config, new_run=False)


def load_study(path, seeds: int | None = None, out=None) -> Study:
    """Parse and check a whole study file; raise CnnlabError naming the line of the first problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CnnlabError(f"study file {path} not found") from None
    except UnicodeDecodeError:
        raise CnnlabError(f"{path}: not valid YAML (it is not UTF-8 text)") from None
    try:
        root = compose_yaml(text)
    except yaml.YAMLError as e:
        mark, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        if mark and context and context.line != mark.line:
            line += f" (in what starts on line {context.line + 1})"
        raise CnnlabError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if root is None:
        raise CnnlabError(f"{path} is empty: a study needs `base:` and `experiments:`")
    top = _mapping(root, path, "the study file")
    for key, (knode, _) in top.items():
        if key not in STUDY_KEYS:
            hint = " (TrainConfig keys go under `base:` or an experiment)" if key in _FIELDS else ""
            raise CnnlabError(f"{_where(path, knode)}: unknown key '{key}' in the study file{hint}; "
                              f"valid keys are {', '.join(STUDY_KEYS)}")
    if "experiments" not in top:
        raise CnnlabError(f"{path}: the study has no `experiments:` (name -> overrides of `base:`)")

    base_nodes = _mapping(top["base"][1], path, "base") if "base" in top else {}
    _check_settings(base_nodes, path, "base")
    base = {k: _value(v) for k, (_, v) in base_nodes.items()}

    exp_nodes = _mapping(top["experiments"][1], path, "experiments")
    if not exp_nodes:
        raise CnnlabError(f"{_where(path, top['experiments'][1])}: `experiments:` is empty")
    experiments, exp_lines = {}, {}
    for name, (knode, vnode) in exp_nodes.items():
        if not _NAME.match(name):
            raise CnnlabError(f"{_where(path, knode)}: experiment name '{name}' must be letters, digits, _ . + -")
        if isinstance(vnode, yaml.ScalarNode) and vnode.value in ("", "~", "null"):
            settings = {}  # `name:` alone runs the base unchanged
        else:
            settings = _mapping(vnode, path, f"experiment '{name}'")
        _check_settings(settings, path, f"experiment '{name}'")
        experiments[name] = {k: _value(v) for k, (_, v) in settings.items()}
        exp_lines[name] = (knode, settings)

    seed_list = [0]
    if "seeds" in top:
        snode = top["seeds"][1]
        value = _value(snode)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            seed_list = list(range(value))
        elif isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            if len(set(value)) != len(value):
                raise CnnlabError(f"{_where(path, snode)}: `seeds:` lists a seed twice")
            seed_list = value
        else:
            raise CnnlabError(f"{_where(path, snode)}: `seeds:` must be a count (e.g. 3) or a list of integers, got {value!r}")
    if seeds is not None:
        if seeds < 1:
            raise CnnlabError(f"--seeds must be at least 1, got {seeds}")
        seed_list = list(range(seeds))

    budget = None
    if "budget_seconds" in top:
        bnode = top["budget_seconds"][1]
        budget = _value(bnode)
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
            raise CnnlabError(f"{_where(path, bnode)}: `budget_seconds:` must be a positive number of seconds, got {budget!r}")

    description = _value(top["description"][1]) if "description" in top else ""
    out = Path(out) if out else StudyDir.default_for(path).path
    study = Study(path, out, str(description or ""), base, experiments, seed_list, budget)

    # Every merged config must build: check each experiment against its own lines.
    for name, overrides in experiments.items():
        knode, settings = exp_lines[name]
        merged = {**base, **overrides}
        try:
            config = TrainConfig.from_dict(merged, where=str(path))
            if budget is not None:
                config.max_seconds = float(budget)
            check_config(config)
        except CnnlabError as e:
            raise CnnlabError(f"{_where(path, knode)}: experiment '{name}': {e}") from None
        for seed in seed_list:
            run_config = dataclasses.replace(config, seed=seed, model_args=dict(config.model_args),
                                             optimizer_args=dict(config.optimizer_args),
                                             schedule_args=dict(config.schedule_args))
            run_dir = study.dir.run_dir(name, seed)
            run_config.out = str(run_dir)
            study.runs.append(StudyRun(name, seed, run_config, run_dir))
    return study
