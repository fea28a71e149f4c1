"""The study directory: every file a study holds, named here and only here, with its readers and writers.

    STUDY_DIR/                        (default runs/study-<study file name>)
      study.yaml                      a copy of the study file the study ran
      runs/<experiment>/seed<k>/      one run directory (`cnnlab.dirs.run`) per experiment and seed
      results.md, results.csv         the table: mean ± std over seeds per experiment
      train_loss.png                  training loss against iteration, mean over seeds
      val_acc.png                     validation accuracy against epoch, mean with a min-max band

`cnnlab study` writes it (`cnnlab.workflows.study`); reports and comparisons read it. Each
reaches these files through a `StudyDir`:

    sd = StudyDir("runs/study-optimizers")
    sd.run_dir("adam", 2)           # runs/study-optimizers/runs/adam/seed2
    sd.is_study(); sd.check()       # written by `cnnlab study`? (check raises a one-line error)
    sd.list_runs()                  # [("adam/seed0", Path(...)), ...]: the run directories present
    sd.progress()                   # {"adam": {"runs": 3, "finished": 2}, ...} from each run's summary.json

What a study has done is read from structured files (each run's summary.json and checkpoints,
results.csv, the study file's YAML), never from log text.
"""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from cnnlab.dirs.run import RunDir
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text, load_yaml, write_csv

SEED_PREFIX = "seed"


class StudyDir:
    """Paths and plain reads/writes of one study directory (it need not exist yet)."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def default_for(cls, study_file) -> "StudyDir":
        """Where a study file's study goes when no --out is given: runs/study-<file name>."""
        return cls(Path("runs") / f"study-{Path(study_file).stem}")

    study_file = property(lambda self: self.path / "study.yaml")
    runs = property(lambda self: self.path / "runs")
    results_md = property(lambda self: self.path / "results.md")
    results_csv = property(lambda self: self.path / "results.csv")
    loss_plot = property(lambda self: self.path / "train_loss.png")
    val_plot = property(lambda self: self.path / "val_acc.png")

    @property
    def result_files(self) -> tuple[Path, Path, Path, Path]:
        """(results.md, results.csv, train_loss.png, val_acc.png): what a finished study writes."""
        return self.results_md, self.results_csv, self.loss_plot, self.val_plot

    def run_dir(self, experiment: str, seed: int) -> Path:
        """runs/<experiment>/seed<k>/: the run directory of one experiment and seed."""
        return self.runs / experiment / f"{SEED_PREFIX}{seed}"

    # ---- what kind of directory this is

    def is_study(self) -> bool:
        """A directory `cnnlab study` wrote: its copy of the study file, or runs/<experiment>/seed<k>/."""
        return self.path.is_dir() and (self.study_file.is_file() or bool(self.list_runs()))

    def check(self) -> "StudyDir":
        """Raise a one-line error unless this is a study directory written by `cnnlab study`."""
        if not self.path.is_dir():
            raise CnnlabError(f"study directory {self.path} does not exist")
        if not self.is_study():
            raise CnnlabError(f"{self.path} is not a cnnlab study directory (no study.yaml and no runs): "
                              "give a directory written by `cnnlab study`")
        return self

    # ---- the runs

    def list_runs(self) -> list[tuple[str, Path]]:
        """(label 'experiment/seedK', run directory) of every run directory present, experiments in
        name order and seeds in number order."""
        if not self.runs.is_dir():
            return []

        def seed_number(p):
            k = p.name[len(SEED_PREFIX):]
            return (int(k) if p.name.startswith(SEED_PREFIX) and k.isdigit() else 1 << 30, p.name)

        found = []
        for exp in sorted(p for p in self.runs.iterdir() if p.is_dir()):
            for run in sorted((p for p in exp.iterdir() if p.is_dir()), key=seed_number):
                if RunDir(run).is_run():
                    found.append((f"{exp.name}/{run.name}", run))
        return found

    def progress(self) -> dict:
        """experiment -> {"runs": run directories present, "finished": those holding summary.json}."""
        out = {}
        for label, run in self.list_runs():
            entry = out.setdefault(label.rsplit("/", 1)[0], {"runs": 0, "finished": 0})
            entry["runs"] += 1
            entry["finished"] += RunDir(run).finished()
        return out

    # ---- the study file

    def write_study_file(self, text: str):
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.study_file, text)

    def description(self) -> str:
        """The `description:` of the kept study file ('' when there is none)."""
        try:
            data = load_yaml(self.study_file.read_text())
        except (OSError, yaml.YAMLError):
            return ""
        return str(data.get("description") or "") if isinstance(data, dict) else ""

    # ---- results

    def write_results(self, markdown: str, header, rows):
        """results.md (the table as Markdown) and results.csv (`header`, then one row per experiment)."""
        atomic_write_text(self.results_md, markdown)
        write_csv(self.results_csv, header, rows)

    def read_results(self) -> list[dict]:
        """results.csv's rows as dicts of text ([] before the study has written it)."""
        if not self.results_csv.exists():
            return []
        with open(self.results_csv, newline="") as f:
            return list(csv.DictReader(f))
