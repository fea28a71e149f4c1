"""cnnlab from Python: for notebooks and scripts. Every call returns objects (dicts, dataclasses,
matplotlib Figures) and writes the same files as the command of the same name.

    import cnnlab.api as cl

    run = cl.train(model="lenet5", dataset="mnist", epochs=2, subset=5000, out="runs/lenet5")
    run.summary["test_acc"], run.metrics[-1]          # summary.json, metrics.csv rows
    figs = cl.plot(run).figures                       # name -> Figure: loss, accuracy, lr, filters, ...
    figs["filters"]                                   # shows inline in Jupyter
    cl.evaluate(run)["per_class_accuracy"]
    cl.cost(run).totals["macs"]                       # cnnlab.cost's CostReport
    cl.compare([run, other]).figures["val_acc"]       # overlaid curves, and .rows for a table
    cl.report([run, other]).path                      # comparison.html

A `Run` is a run directory; anything that takes a run also takes its path. This module is thin on
purpose: the work is done by cnnlab.train and cnnlab.workflows, which the commands call too.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.dirs import RunDir

__all__ = ["Run", "train", "resume", "evaluate", "predict", "plot", "compare", "report", "cost", "score", "bench",
           "profile", "study", "environment", "TrainConfig"]


@dataclass(frozen=True)
class Run:
    """A run directory. Its files are read when asked for, so a Run is never stale."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(os.fspath(self.path)))

    def __fspath__(self):
        return str(self.path)

    @property
    def dir(self) -> RunDir:
        return RunDir(self.path)

    @property
    def summary(self) -> dict | None:
        return self.dir.read_summary()

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.load(self.dir.config)

    @property
    def metrics(self) -> list[dict]:
        return self.dir.read_metrics()

    @property
    def iterations(self) -> list[dict]:
        return self.dir.read_iterations()

    def __repr__(self):
        s = self.summary or {}
        acc = f", test accuracy {100 * s['test_acc']:.2f}%" if isinstance(s.get("test_acc"), float) else ""
        return f"Run('{self.path}'{acc})"


def _path(run) -> Path:
    return Path(os.fspath(run))


def train(config: TrainConfig | dict | None = None, *, hooks=(), quiet: bool = True, **fields) -> Run:
    """Train a new run: a TrainConfig, a dict of its keys, or the keys as keyword arguments
    (`train(model="lenet5", epochs=2)`); keyword arguments override the config's values."""
    from cnnlab.train.loop import train as _train

    if isinstance(config, TrainConfig):
        config = copy.deepcopy(config)  # checked when it was made; the caller's stays as it is
    elif isinstance(config, dict) or config is None:
        config = TrainConfig.from_dict(config or {}, where="train()")
    else:
        raise CnnlabError(f"train() takes a TrainConfig or a dict, got {type(config).__name__}")
    summary = _train(config.update(fields, where="train()"), quiet=quiet, hooks=hooks)
    return Run(Path(summary["run_dir"]))


def resume(run, *, quiet: bool = True, hooks=(), **overrides) -> Run:
    """Continue an interrupted run exactly (a new `lr` or `grad_clip` may be given)."""
    from cnnlab.train.loop import train as _train

    summary = _train(None, resume=str(_path(run)), quiet=quiet, hooks=hooks, overrides=overrides)
    return Run(Path(summary["run_dir"]))


def evaluate(run, split: str = "test", checkpoint: str = "best", data_dir=None, device="cpu", write: bool = True) -> dict:
    """Accuracy, loss, per-class accuracy and the confusion matrix (`cnnlab evaluate`)."""
    from cnnlab.workflows.measure.evaluate import evaluate_run

    return evaluate_run(_path(run), split, checkpoint, data_dir, device, write)


def predict(run, split: str = "test", out=None, names: bool = False, data_dir=None, device="cpu") -> dict:
    """predictions.csv for a split (`cnnlab predict`)."""
    from cnnlab.workflows.measure.evaluate import predict_run

    return predict_run(_path(run), split, out=out, names=names, data_dir=data_dir, device=device)


def plot(run, data_dir=None, device="cpu", write: bool = True, evaluate: bool = True):
    """A run's figures (`cnnlab plot`): a RunPlots with `.figures` (name -> Figure), `.files`,
    `.notes` (what could not be drawn, and why) and `.test` (the evaluation behind the confusion matrix)."""
    from cnnlab.workflows.report import plot_run

    return plot_run(_path(run), data_dir=data_dir, device=device, write=write, evaluate=evaluate)


@dataclass
class Comparison:
    rows: list  # one dict per run: the comparison table's columns, as text
    figures: dict  # val_acc, train_loss, val_loss -> Figure
    cells: list = field(default_factory=list, repr=False)  # the same rows with sort values

    def _repr_html_(self):  # a notebook shows the table
        from cnnlab.workflows.report import COMPARE_COLUMNS, Table, html_block

        return html_block(Table(COMPARE_COLUMNS, self.cells, sortable=False))


def compare(runs) -> Comparison:
    """The comparison table (as dicts) and overlaid curves of several runs or study directories,
    without writing a file."""
    from cnnlab.workflows.report import compare_figures, read_run
    from cnnlab.workflows.report import compare_row, expand_paths

    found, _ = expand_paths([_path(r) for r in runs])
    files = [read_run(path, label) for label, path in found]
    cells = [compare_row(f) for f in files]
    return Comparison([{k: getattr(v, "text", v) for k, v in row.items()} for row in cells], compare_figures(files),
                      cells)


def report(runs, out=None, fmt: str = "html", data_dir=None, device="cpu", evaluate: bool = True):
    """Write the HTML (or Markdown) report of one run, or the comparison of several (`cnnlab report`)."""
    from cnnlab.workflows.report import report as _report

    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    return _report([_path(r) for r in runs], out=out, fmt=fmt, data_dir=data_dir, device=device, evaluate=evaluate)


def cost(run_or_model, input=None, classes: int = 10):
    """The cost model's report (params, MACs, activations, cycles, energy per layer) of a run, a
    registered model name or a spec: a CostReport (`.totals`, `.rows`, `.to_dict()`, and
    `cnnlab.cost.report.format_table(report)` for the text table)."""
    from cnnlab.cost.report import analyze

    if isinstance(run_or_model, (Run, os.PathLike)) or Path(str(run_or_model)).is_dir():
        from cnnlab.dirs import load_run

        loaded = load_run(_path(run_or_model))
        return analyze(loaded.model, tuple(input or loaded.data["shape"]), name=loaded.config.model)
    from cnnlab.build import build_for

    shape = tuple(input or (3, 32, 32))
    model = build_for({"model": str(run_or_model)}, shape, classes)
    return analyze(model, shape, name=str(run_or_model))


def score(run, write: bool = True, data_dir=None) -> dict:
    """The class competition's score of a run (`cnnlab score`)."""
    from cnnlab.workflows.measure.score import score_run

    return score_run(_path(run), write=write, data_dir=data_dir)


def bench(run, devices=("cpu",), batch_size: int = 256, train: bool = False, write: bool = True, data_dir=None) -> list:
    """Accuracy and latency per device (`cnnlab bench`): one dict per device."""
    from cnnlab.workflows.measure.bench import bench_run

    return bench_run(_path(run), devices=tuple(devices), batch_size=batch_size, do_train=train, write=write,
                     data_dir=data_dir)


@dataclass
class Profile:
    result: dict  # cnnlab.scratch.profile.profile_step's: per-layer forward/backward ms, shares
    figure: object  # a bar chart of it

    def table(self) -> str:
        from cnnlab.scratch.profile import format_profile

        return format_profile(self.result)


def profile(model: str, input=(3, 32, 32), batch_size: int = 64, classes: int = 10, backend: str = "numpy",
            repeats: int = 3, seed: int = 0) -> Profile:
    """Time each layer's forward and backward pass of one training step of the NumPy engine on
    random data (`cnnlab profile`)."""
    import numpy as np

    from cnnlab.scratch.model import ScratchNet
    from cnnlab.scratch.profile import profile_step
    from cnnlab.workflows.report import profile_figure

    if batch_size < 1 or repeats < 1:
        raise CnnlabError("batch_size and repeats must be at least 1")
    net = ScratchNet(model, classes, tuple(input), np.float32, backend)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *input)).astype(np.float32)
    y = rng.integers(0, classes, batch_size)
    result = profile_step(net, x, y, repeats=repeats, warmup=2 if backend == "numba" else 1)
    return Profile(result, profile_figure(result))


def study(file, seeds: int | None = None, out=None, log=print) -> dict:
    """Run a study file (`cnnlab study`); returns experiment -> results. Its directory is `out`
    (default runs/study-<file name>), which `report` and `compare` take as a whole."""
    from cnnlab.workflows.study import load_study, run_study

    return run_study(load_study(file, seeds=seeds, out=out), log=log)


def environment() -> dict:
    """This machine: CPU, memory, GPUs, library versions (`cnnlab env`)."""
    from cnnlab.envinfo import environment as _env

    return _env()
