"""The search directory: every file a search holds, named here and only here, with its readers and writers.

    SEARCH_DIR/                   (default runs/search-<search file name>)
      search.db                   the Optuna study, SQLite (absent when the study lives on a server)
      trials/NNNN/                one run directory (`cnnlab.dirs.run`) per trained trial
      final_runs/NNNN-sS/         the final stage: trial NNNN's candidate retrained in full, seed S
      trials.csv                  every trial: state, spec, costs, validation error, why it was refused,
                                  the trial whose candidate it repeats (duplicate_of)
      pareto.png                  validation error against cycles, the Pareto front ringed
      best.yaml                   the chosen trial's TrainConfig, ready for `cnnlab train --config`
      best.json                   the chosen model's validation and test figures (the search's and, after a
                                  final stage, each finalist's), costs and trial counts

`cnnlab search` writes it (`cnnlab.workflows.search`); reports read it. Each reaches these files
through a `SearchDir`:

    sd = SearchDir("runs/search-competition")
    sd.trial_dir(7)                  # runs/search-competition/trials/0007
    sd.final_dir(7, 1)               # runs/search-competition/final_runs/0007-s1
    with sd.claim(sd.final_dir(7, 1)) as mine: ...   # True for one process at a time
    sd.sqlite_url()                  # sqlite:////abs/path/runs/search-competition/search.db
    sd.is_search(); sd.check()       # written by `cnnlab search`? (check raises a one-line error)
    sd.finished()                    # best.json and trials.csv are there
    sd.read_best(); sd.read_trials() # best.json's dict; trials.csv's rows
    sd.load_trials()                 # the Optuna trials of search.db (needs Optuna)

What a search has done is read from structured files (the Optuna storage, best.json,
trials.csv), never from log text.
"""

from __future__ import annotations

import csv
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text, write_csv

TRIAL_DIGITS = 4  # trials/0007: run directories sort in trial order up to 9999 trials


class SearchDir:
    """Paths and plain reads/writes of one search directory (it need not exist yet)."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def default_for(cls, search_file) -> "SearchDir":
        """Where a search file's search goes when no --out is given: runs/search-<file name>."""
        return cls(Path("runs") / f"search-{Path(search_file).stem}")

    storage_file = property(lambda self: self.path / "search.db")
    trials = property(lambda self: self.path / "trials")
    final_runs = property(lambda self: self.path / "final_runs")
    trials_csv = property(lambda self: self.path / "trials.csv")
    pareto_png = property(lambda self: self.path / "pareto.png")
    best_yaml = property(lambda self: self.path / "best.yaml")
    best_json = property(lambda self: self.path / "best.json")

    @property
    def result_files(self) -> tuple[Path, Path, Path, Path]:
        """(trials.csv, pareto.png, best.yaml, best.json): what a finished search writes."""
        return self.trials_csv, self.pareto_png, self.best_yaml, self.best_json

    def trial_dir(self, number: int) -> Path:
        """trials/NNNN/: the run directory of trial `number`."""
        return self.trials / f"{int(number):0{TRIAL_DIGITS}d}"

    def trained_dir(self, trial) -> Path | None:
        """trials/NNNN/ of a study trial that trained (its `run_dir` attribute is set), or None: found
        under this folder as it is now, since the recorded path is relative to where the search ran
        and a moved or copied search folder no longer matches it."""
        return self.trial_dir(trial.number) if trial.user_attrs.get("run_dir") else None

    def final_dir(self, number: int, seed: int) -> Path:
        """final_runs/NNNN-sS/: the run directory of trial `number`'s candidate retrained with seed `seed`."""
        return self.final_runs / f"{int(number):0{TRIAL_DIGITS}d}-s{int(seed)}"

    def final_trials(self) -> set[int]:
        """The trial numbers with a final run directory (final_runs/NNNN-sS/): finalists already begun."""
        if not self.final_runs.is_dir():
            return set()
        return {int(p.name.split("-s")[0]) for p in self.final_runs.iterdir()
                if p.is_dir() and re.fullmatch(r"\d+-s\d+", p.name)}

    @contextmanager
    def claim(self, run_dir):
        """Hold `run_dir` for this process while the block runs: yields True, or False when another
        live process holds it (an exclusive lock on a file beside it, freed when its holder exits)."""
        import fcntl

        run_dir = Path(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir.parent / f".{run_dir.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def sqlite_url(self) -> str:
        """The SQLAlchemy URL of search.db, the default Optuna storage."""
        return f"sqlite:///{self.storage_file.resolve()}"

    # ---- what kind of directory this is

    def is_search(self) -> bool:
        """A directory `cnnlab search` wrote: its study (search.db) or its results (best.json)."""
        return self.path.is_dir() and (self.storage_file.is_file() or self.best_json.is_file())

    def finished(self) -> bool:
        """The search wrote its results: best.json and trials.csv."""
        return self.best_json.is_file() and self.trials_csv.is_file()

    def check(self) -> "SearchDir":
        """Raise a one-line error unless this is a search directory written by `cnnlab search`."""
        if not self.path.is_dir():
            raise CnnlabError(f"search directory {self.path} does not exist")
        if not self.is_search():
            raise CnnlabError(f"{self.path} is not a cnnlab search directory (no search.db and no best.json): "
                              "give a directory written by `cnnlab search`")
        return self

    # ---- results

    def write_trials(self, header, rows):
        write_csv(self.trials_csv, header, rows)

    def read_trials(self) -> list[dict]:
        """trials.csv's rows as strings ([] when there is none)."""
        if not self.trials_csv.exists():
            return []
        with open(self.trials_csv, newline="") as f:
            return list(csv.DictReader(f))

    def write_best_config(self, config_yaml: str, comment: str):
        """best.yaml: `comment` (lines, each written as a YAML comment) above the config."""
        head = "".join(f"# {line}\n" for line in comment.splitlines())
        atomic_write_text(self.best_yaml, head + config_yaml)

    def write_best(self, best: dict):
        atomic_write_text(self.best_json, json.dumps(best, indent=2, default=str) + "\n")

    def read_best(self) -> dict | None:
        """best.json's content, or None when it does not exist; a damaged file is a one-line error."""
        if not self.best_json.exists():
            return None
        try:
            return json.loads(self.best_json.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CnnlabError(f"{self.best_json} is not valid JSON: run `cnnlab search` again to write it") from None

    def read(self) -> dict:
        """A finished search's best.json and trials.csv, and where its pareto.png is (for reports)."""
        if not self.finished():
            raise CnnlabError(f"the search in {self.path} has not finished (no best.json and trials.csv): "
                              "run `cnnlab search` to the end first")
        return {"best": self.read_best(), "trials": self.read_trials(), "pareto_png": self.pareto_png}

    def load_trials(self, study_name: str | None = None) -> list:
        """The Optuna trials (FrozenTrial) of search.db, read through Optuna's public API without
        creating anything; `study_name` may be left out while the file holds one study."""
        if not self.storage_file.is_file():
            raise CnnlabError(f"{self.path} holds no search.db: its study lives elsewhere (--storage)")
        try:
            import optuna
        except ImportError:
            raise CnnlabError("reading a search's study needs Optuna: pip install 'cnnlab[search]'") from None
        storage = optuna.storages.RDBStorage(self.sqlite_url(), skip_table_creation=True)
        return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
