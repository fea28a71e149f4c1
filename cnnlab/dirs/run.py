"""The run directory: every file a run holds, named here and only here, with its readers and writers.

    RUN_DIR/
      config.yaml               the resolved TrainConfig (rebuilds the run)
      metrics.csv               one row per epoch (METRICS_HEADER)
      iterations.csv            one row per training step (ITERATIONS_HEADER)
      train.log                 the epoch table and messages; the last line gives the test accuracy
      summary.json              final figures, and the cnnlab version, git commit, device and machine
      state.json                where the run stands: {"status": "training" | "stopped" | "finished", "reason"}
                                (`RunDir.status()` reads it with summary.json, which a finished run has)
      checkpoints/last.pt       the latest state (also written mid-epoch), for --resume
      checkpoints/best.pt       the state with the best validation accuracy
      evaluation.json, per_class.csv, confusion_matrix.csv   `cnnlab evaluate` (test split;
                                `-val` / `-train` suffixes for the other splits)
      predictions.csv           `cnnlab predict` (by default)
      score.json                `cnnlab score`
      bench.csv, bench.json     `cnnlab bench`
      plots/                    figures (PNG) made from the files above (`cnnlab plot`): loss.png,
                                accuracy.png, lr.png, filters.png, confusion.png, mistakes.png
      report.html               a self-contained report of the run (`cnnlab report`)
      report.md                 the same as Markdown (`cnnlab report --format md`), its PNGs in plots/
      tensorboard/              TensorBoard event files (`cnnlab train --tensorboard`)
      exports/                  the model in other formats (`cnnlab export`): model.<ext>, the format's
                                extension, e.g. model.onnx (model-last.<ext> from the last checkpoint)
      .lock                     held while a process trains the run (two trainers never share one)

Every command and workflow reaches these files through `RunDir` (names, plain reads and atomic
writes) or `load_run` (a `LoadedRun`: config, model, data meta, and any split of the dataset).
A module outside this one never spells a run-directory file name.

Over 400 lines: that rule puts every run file's reader and writer here, damaged-file checks included
(CSV rows, checkpoints of another run), so none of them is spelled twice.
"""

from __future__ import annotations

import csv
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.checkpoint import build_model_from_checkpoint, load_checkpoint
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text, make_dirs, write_csv

METRICS_HEADER = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
ITERATIONS_HEADER = ["step", "epoch", "loss", "lr"]
SPLITS = ("test", "val", "train")
# what makes the network a checkpoint holds: a checkpoint whose config differs from the run's in one of
# these was written by another run (a file copied between runs)
NETWORK_KEYS = ("model", "model_args", "dataset", "resize", "input_channels")
# the figures of `cnnlab plot`, in the order a report shows them: name -> file in plots/
PLOT_FILES = {"loss": "loss.png", "accuracy": "accuracy.png", "lr": "lr.png", "filters": "filters.png",
              "confusion": "confusion.png", "mistakes": "mistakes.png"}


class RunDir:
    """Paths and plain reads/writes of one run directory (it need not exist yet)."""

    def __init__(self, path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.csv")
    iterations = property(lambda self: self.path / "iterations.csv")
    log_file = property(lambda self: self.path / "train.log")
    summary = property(lambda self: self.path / "summary.json")
    state = property(lambda self: self.path / "state.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.checkpoints / "last.pt")
    best = property(lambda self: self.checkpoints / "best.pt")
    predictions = property(lambda self: self.path / "predictions.csv")
    score = property(lambda self: self.path / "score.json")
    bench_csv = property(lambda self: self.path / "bench.csv")
    bench_json = property(lambda self: self.path / "bench.json")
    plots = property(lambda self: self.path / "plots")
    report = property(lambda self: self.path / "report.html")
    report_md = property(lambda self: self.path / "report.md")
    tensorboard = property(lambda self: self.path / "tensorboard")
    exports = property(lambda self: self.path / "exports")
    lock_file = property(lambda self: self.path / ".lock")

    def checkpoint(self, which: str) -> Path:
        if which not in ("best", "last"):
            raise CnnlabError(f"unknown checkpoint '{which}': choose best or last")
        return self.best if which == "best" else self.last

    def plot_file(self, name: str) -> Path:
        """plots/<name>.png of one of PLOT_FILES."""
        if name not in PLOT_FILES:
            raise CnnlabError(f"unknown plot '{name}': choose {', '.join(PLOT_FILES)}")
        return self.plots / PLOT_FILES[name]

    def export_file(self, ext: str, checkpoint: str = "best", int8: bool = False) -> Path:
        """`cnnlab export`'s default file for a format's extension (no dot), e.g. "onnx": exports/model.onnx
        (exports/model-last.onnx for the last checkpoint, exports/model-int8.onnx quantized). The formats are
        cnnlab.workflows.export's."""
        stem = "model" + ("" if checkpoint == "best" else f"-{checkpoint}") + ("-int8" if int8 else "")
        return self.exports / f"{stem}.{ext}"

    def evaluation_files(self, split: str = "test") -> tuple[Path, Path, Path]:
        """(evaluation.json, per_class.csv, confusion_matrix.csv) of a split; the test split keeps the plain names."""
        suffix = "" if split == "test" else f"-{split}"
        return (self.path / f"evaluation{suffix}.json", self.path / f"per_class{suffix}.csv",
                self.path / f"confusion_matrix{suffix}.csv")

    # ---- what kind of directory this is

    def is_run(self) -> bool:
        return self.config.exists() and self.checkpoints.is_dir()

    def check(self) -> "RunDir":
        """Raise a one-line error unless this is a run directory written by `cnnlab train`."""
        if self.path.is_file():
            raise CnnlabError(f"{self.path} is a file, not a run directory: give a directory written by `cnnlab train`")
        if not self.path.is_dir():
            raise CnnlabError(f"run directory {self.path} does not exist")
        if not self.is_run():
            raise CnnlabError(f"{self.path} is not a cnnlab run directory (no config.yaml and checkpoints/): "
                              "give a directory written by `cnnlab train`")
        return self

    def create(self):
        make_dirs(self.checkpoints)  # a file in the way is one line naming it

    def create_new(self) -> bool:
        """Make this directory if no one has; False when it already exists (exclusive, race-free)."""
        make_dirs(self.path.parent)
        try:
            self.path.mkdir(exist_ok=False)
        except FileExistsError:
            return False
        self.create()
        return True

    @contextmanager
    def lock(self):
        """Hold the run for one trainer: a second process that tries gets a one-line error naming the first."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise CnnlabError(f"run {self.path} is being trained by another process (pid {holder}): "
                                  "wait for it to finish, or stop it first") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield self
        finally:
            os.close(fd)  # closing releases the lock; the file stays, empty of meaning

    # ---- the training files

    def newest_checkpoint(self) -> tuple[Path | None, dict | None, list]:
        """(path, checkpoint) of the newest complete state among last.pt and best.pt, and warnings.

        last.pt is normally the newest; best.pt stands in when last.pt is missing, damaged or
        behind it (e.g. the disk filled up between writing the two)."""
        found, warnings = [], []
        for path in (self.last, self.best):
            if not path.exists():
                continue
            try:
                ckpt = load_checkpoint(path)
            except CnnlabError as e:
                warnings.append(f"{e}; using the other checkpoint")
                continue
            self.check_checkpoint(path, ckpt)  # another run's file is the user's to sort out, not skipped
            found.append((path, ckpt))
        if not found:
            return None, None, warnings
        path, ckpt = max(found, key=lambda pc: (pc[1]["progress"].get("step", 0), pc[0] == self.last))
        return path, ckpt, warnings

    def check_checkpoint(self, path, ckpt: dict):
        """A one-line error when the checkpoint at `path` was written by another run: its config builds
        another network (NETWORK_KEYS) than this run's config.yaml. Nothing is compared when config.yaml
        cannot be read: the checkpoint carries its own config, and that is the one used."""
        try:
            mine = TrainConfig.load(self.config)
        except CnnlabError:
            return
        theirs = TrainConfig.from_dict(ckpt["config"], where=str(path))
        for key in NETWORK_KEYS:
            if getattr(mine, key) != getattr(theirs, key):
                raise CnnlabError(f"checkpoint {path} was written by another run: its {key} is {getattr(theirs, key)!r}, "
                                  f"but {self.config} has {getattr(mine, key)!r}; put back this run's own checkpoint, "
                                  "or use the run that wrote it")

    def write_config(self, config: TrainConfig):
        atomic_write_text(self.config, config.to_yaml())

    def log(self, line: str):
        with open(self.log_file, "a") as f:
            f.write(line.rstrip("\n") + "\n")

    def read_log(self) -> list[str]:
        """train.log's lines ([] when there is none)."""
        if not self.log_file.exists():
            return []
        return self.log_file.read_text(errors="replace").splitlines()

    def append_rows(self, path, header, rows):
        if not rows and path.exists():
            return
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            if new:
                w.writerow(header)
            w.writerows(rows)

    def append_iterations(self, rows):
        self.append_rows(self.iterations, ITERATIONS_HEADER, rows)

    def append_metrics(self, row: dict):
        self.append_rows(self.metrics, METRICS_HEADER,
                         [[f"{row[h]:.6g}" if isinstance(row[h], float) else row[h] for h in METRICS_HEADER]])

    def truncate_to(self, step: int, epoch: int):
        """Keep the iterations up to `step` and the metrics up to `epoch`: on resume, the files then
        end exactly where the checkpoint does."""
        self._truncate(self.iterations, ITERATIONS_HEADER, lambda r: int(r["step"]) <= step)
        self._truncate(self.metrics, METRICS_HEADER, lambda r: int(r["epoch"]) <= epoch)

    def _truncate(self, path, header, keep):
        if not path.exists():
            return
        _read_numeric_csv(path, header[0])  # a damaged file is one line, not a traceback
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if keep(r)]
        write_csv(path, header, [[r[h] for h in header] for r in rows])

    def read_metrics(self) -> list[dict]:
        """metrics.csv's rows as numbers ([] when there is none); a damaged file is a one-line error."""
        return _read_numeric_csv(self.metrics, METRICS_HEADER[0])

    def read_iterations(self) -> list[dict]:
        """iterations.csv's rows as numbers ([] when there is none); a damaged file is a one-line error."""
        return _read_numeric_csv(self.iterations, ITERATIONS_HEADER[0])

    # ---- results

    def write_json(self, path: Path, data):
        atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")

    def read_json(self, path: Path):
        """The JSON file's content, or None when it does not exist; a damaged file is a one-line error."""
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CnnlabError(f"{path} is not valid JSON: delete it and run the command that writes it again") from None

    def write_summary(self, summary: dict):
        self.write_json(self.summary, summary)

    def read_summary(self) -> dict | None:
        return self.read_json(self.summary)

    def finished(self) -> bool:
        return self.summary.exists()

    def write_state(self, status: str, reason: str | None = None):
        """Record where the run stands: "training" (a trainer has it), "stopped" (with why), "finished"."""
        self.write_json(self.state, {"status": status, "reason": reason})

    def status(self) -> tuple[str, str | None]:
        """("finished" | "stopped" | "did not finish", why or None), from summary.json and state.json.
        A run whose state still says "training" with no trainer holding it crashed or was killed."""
        if self.summary.exists():
            return "finished", None
        try:
            state = self.read_json(self.state) or {}
        except CnnlabError:
            state = {}
        if state.get("status") == "stopped":
            return "stopped", state.get("reason")
        return "did not finish", None

    def write_evaluation(self, split: str, result: dict, classes):
        js, per_class, confusion = self.evaluation_files(split)
        self.write_json(js, result)
        write_csv(per_class, ["class", "name", "accuracy", "count"],
                  [[i, c, f"{a:.6f}", sum(result["confusion"][i])] for i, (c, a) in
                   enumerate(zip(classes, result["per_class_accuracy"]))])
        write_csv(confusion, ["true\\predicted"] + list(classes),
                  [[c] + row for c, row in zip(classes, result["confusion"])])
        return js, per_class, confusion

    def write_predictions(self, labels, out=None) -> Path:
        out = Path(out) if out else self.predictions
        write_csv(out, ["id", "label"], list(enumerate(labels)))
        return out

    def write_score(self, result: dict):
        self.write_json(self.score, result)

    def write_bench(self, rows: list[dict], columns):
        """bench.csv and bench.json, each written atomically, holding exactly `rows`."""
        write_csv(self.bench_csv, columns, [[r.get(c, "") for c in columns] for r in rows])
        self.write_json(self.bench_json, rows)

    def read_bench(self) -> list[dict]:
        """The rows bench.json holds ([] when there is none); anything else there is a one-line error."""
        return read_bench_rows(self.bench_json)


def read_bench_rows(path) -> list[dict]:
    """The rows of a bench JSON file (`cnnlab bench`; [] when it does not exist): a list of objects, each
    with a device and a status. A file holding anything else is a one-line error that names it."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("device"), str)
                                             and isinstance(r.get("status"), str) for r in rows):
        raise CnnlabError(f"{path} does not hold cnnlab bench rows (damaged or edited): move it aside or delete it, "
                          "then bench again (its rows are merged with the new ones)")
    return rows


def _read_numeric_csv(path, key: str) -> list[dict]:
    """The rows of a CSV file cnnlab wrote, every value a number, the `key` column among them; an
    empty value is left out of its row. Anything else is a CnnlabError naming the line and value."""
    path = Path(path)
    if not path.exists():
        return []
    damaged = f"{path} cannot be read"
    fix = "restore it, or delete it (its figures are then missing from reports and plots)"
    rows = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                return []
            if key not in reader.fieldnames:
                raise CnnlabError(f"{damaged}: its header has no '{key}' column (line 1 is "
                                  f"{','.join(reader.fieldnames)[:60]!r}): {fix}")
            for r in reader:
                if None in r:
                    raise CnnlabError(f"{damaged}: line {reader.line_num} has more values than the header: {fix}")
                row = {}
                for k, v in r.items():
                    if v in (None, ""):
                        continue
                    try:
                        row[k] = float(v)
                    except ValueError:
                        raise CnnlabError(f"{damaged}: line {reader.line_num} has {v[:40]!r} as its {k}, which is "
                                          f"not a number: {fix}") from None
                rows.append(row)
    except UnicodeDecodeError:
        raise CnnlabError(f"{damaged}: it is not text: {fix}") from None
    except csv.Error as e:
        raise CnnlabError(f"{damaged}: {e}: {fix}") from None
    return rows


@dataclass
class LoadedRun:
    """A trained run, loaded: its config, its model (eval mode, CPU), the data meta and the checkpoint.

    `split("test")` loads the dataset the run trained on (the same seeded validation split and
    subset) and gives one of its splits, its labels as the model's class indices
    (`cnnlab.evaluate.labels_for_model`: matched by the class names the checkpoint records, so an
    image folder changed since training is scored right or refused); the dataset is loaded once per
    LoadedRun. `dataset()` is the dataset as it is on disk, its labels unmatched."""

    run_dir: Path
    config: TrainConfig
    model: torch.nn.Module
    data: dict  # classes, mean, std, shape, num_classes
    checkpoint: dict
    which: str = "best"
    _dataset: object = field(default=None, repr=False)

    @property
    def dir(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def loss_name(self) -> str:
        return self.config.loss or getattr(self.model, "loss_name", "softmax")

    def dataset(self, data_dir=None):
        if self._dataset is None:
            from cnnlab.data import load_dataset

            cfg = self.config
            # min_classes=1: a folder holding one of the model's classes can be evaluated, not trained on
            self._dataset = load_dataset(cfg.dataset, data_dir or cfg.data_dir, cfg.val_size, cfg.seed, cfg.subset,
                                         min_classes=1)
        return self._dataset

    def split(self, name: str = "test", data_dir=None):
        from cnnlab.evaluate import labels_for_model

        if name not in SPLITS:
            raise CnnlabError(f"unknown split '{name}': choose {', '.join(SPLITS)}")
        ds = self.dataset(data_dir)
        return labels_for_model(getattr(ds, name), ds.classes, self.data["classes"], self.config.dataset)

    def loader(self, name: str = "test", batch_size: int = 1000, device="cpu", data_dir=None):
        """A BatchLoader over one split, normalised as in training, in dataset order."""
        from cnnlab.data.loader import BatchLoader

        d = self.data
        return BatchLoader(self.split(name, data_dir), batch_size, d["mean"], d["std"], device=device)


def load_run(run_dir, which: str = "best") -> LoadedRun:
    """A trained run with its `best` (validation) or `last` weights; `best` falls back to `last`."""
    run = RunDir(run_dir).check()
    path = run.checkpoint(which)
    if which == "best" and not path.exists():
        path = run.last
    ckpt = load_checkpoint(path)
    run.check_checkpoint(path, ckpt)
    return LoadedRun(run.path, TrainConfig.from_dict(ckpt["config"]), build_model_from_checkpoint(ckpt, path),
                     ckpt["data"], ckpt, which)
