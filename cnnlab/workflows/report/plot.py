"""A run's figures, made from its run directory: what `cnnlab plot` writes and a run's report embeds.

    result = plot_run("runs/x")         # every figure that can be drawn, written to runs/x/plots/
    result.figures["loss"]              # a matplotlib Figure (shows inline in a notebook)
    result.files["loss"]                # runs/x/plots/loss.png
    result.notes                        # figure -> why it could not be drawn, e.g. no conv layer
    result.test                         # the Evaluation behind the confusion matrix and mistakes

The figures are cnnlab.dirs.PLOT_FILES, in that order: loss, accuracy, lr (from metrics.csv and
iterations.csv), filters (the trained model's first convolution), confusion and mistakes. The
last two evaluate the run's best weights on its test split (cnnlab.workflows.measure.mistakes;
the dataset must be at hand); without it, the confusion matrix comes from evaluation.json when
`cnnlab evaluate` wrote one. Both engines' runs load as PyTorch models (a scratch run's
checkpoint holds PyTorch weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnlab.dirs import PLOT_FILES
from cnnlab.errors import CnnlabError
from cnnlab.workflows.measure.mistakes import Evaluation, evaluate_mistakes
from cnnlab.workflows.report.figures import (accuracy_figure, confusion_figure, filters_figure, loss_figure,
                                             lr_figure, mistakes_figure, save_png)
from cnnlab.workflows.report.snapshot import RunFiles, read_run


@dataclass
class RunPlots:
    run_dir: Path
    figures: dict  # name -> matplotlib Figure, in PLOT_FILES order
    files: dict  # name -> PNG path written (empty when write=False)
    notes: dict  # name -> why that figure is not there
    test: Evaluation | None = None  # the evaluation the confusion matrix and mistakes come from

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "files": {k: str(v) for k, v in self.files.items()},
                "notes": self.notes, "test": self.test.to_dict() if self.test else None}


def evaluate_test(files: RunFiles, data_dir=None, device="cpu") -> Evaluation | None:
    """Evaluate the run's best weights on its test split; None (and a note) when the model or the
    data is not at hand, in which case evaluation.json (if any) still gives the confusion matrix."""
    run = files.model()
    test = None
    if run is not None:
        try:
            test = run.split("test", data_dir)
        except CnnlabError as e:
            files.notes["test"] = (f"the test split could not be loaded ({e}); pass --data-dir to evaluate the run, "
                                   "or run `cnnlab evaluate` where its data is")
    if test is not None and len(test) == 0:
        files.notes["test"] = "the test split is empty: no confusion matrix and no mistakes"
        test = None
    if run is None or test is None:
        return Evaluation.from_saved(files.saved_evaluation)
    return evaluate_mistakes(run, test, device)


def run_figures(files: RunFiles, data_dir=None, device="cpu", evaluate: bool = True):
    """(figures, notes, test result) of a run already read."""
    figs, notes = {}, {}
    label = files.label
    best = (files.summary or {}).get("best_epoch")
    figs["loss"] = loss_figure(files.iterations, files.metrics, f"{label}: training and validation loss")
    figs["accuracy"] = accuracy_figure(files.metrics, f"{label}: accuracy",
                                       best if isinstance(best, int) and best > 0 else None)
    figs["lr"] = lr_figure(files.iterations, files.metrics, f"{label}: learning rate")
    for name in ("loss", "lr"):
        if figs[name] is None:
            notes[name] = files.notes.get("iterations") or files.notes.get("metrics", "nothing recorded")
    if figs["accuracy"] is None:
        notes["accuracy"] = files.notes.get("metrics", "no epoch has finished yet")
    run = files.model()
    if run is None:
        notes["filters"] = files.notes.get("model", "no trained model")
    else:
        figs["filters"] = filters_figure(run.model, f"{label}: first convolution layer's filters")
        if figs["filters"] is None:
            notes["filters"] = (f"the model ({run.config.model}) has no convolution layer, so there are no filters "
                                "to show")
    test = evaluate_test(files, data_dir, device) if evaluate else None
    if test is not None:
        figs["confusion"] = confusion_figure(test.confusion, test.classes,
                                             f"{label}: confusion matrix, test split ({test.count} images, "
                                             f"{100 * test.accuracy:.2f}% right)")
        if test.mistakes is not None:
            figs["mistakes"] = mistakes_figure(test.mistakes, test.classes, f"{label}: most confident mistakes")
        else:
            notes["mistakes"] = files.notes.get("test") or files.notes.get("model") or "the test images are not at hand"
    else:
        why = files.notes.get("test") or files.notes.get("model") or "evaluation was not asked for"
        notes["confusion"] = notes["mistakes"] = why
    figs = {k: figs[k] for k in PLOT_FILES if figs.get(k) is not None}
    return figs, {k: notes[k] for k in PLOT_FILES if k in notes}, test


def plot_run(run_dir, data_dir=None, device="cpu", write: bool = True, evaluate: bool = True) -> RunPlots:
    """Draw every figure a run directory allows and (by default) write them to RUN_DIR/plots/."""
    files = read_run(run_dir)
    figs, notes, test = run_figures(files, data_dir, device, evaluate)
    written = {}
    if write:
        for name, fig in figs.items():
            written[name] = save_png(fig, files.dir.plot_file(name))
    return RunPlots(files.dir.path, figs, written, notes, test)
