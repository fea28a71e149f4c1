"""The run directory: every file a training run writes, in one place.

    RUN_DIR/
      config.yaml            the resolved TrainConfig (rebuilds the run)
      metrics.csv            one row per epoch (METRICS_HEADER)
      iterations.csv         one row per training step (ITERATIONS_HEADER)
      train.log              the epoch table and messages; the last line gives the test accuracy
      summary.json           final figures: test accuracy/loss, best epoch, time, parameters
      checkpoints/last.pt    the latest state (also written mid-epoch), for --resume
      checkpoints/best.pt    the state with the best validation accuracy
      evaluation.json, per_class.csv, confusion_matrix.csv   written by `cnnlab evaluate`
      predictions.csv        written by `cnnlab predict` (by default)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from cnnlab.io import atomic_write_text, write_csv

METRICS_HEADER = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
ITERATIONS_HEADER = ["step", "epoch", "loss", "lr"]


class RunDir:
    def __init__(self, path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.csv")
    iterations = property(lambda self: self.path / "iterations.csv")
    log_file = property(lambda self: self.path / "train.log")
    summary = property(lambda self: self.path / "summary.json")
    last = property(lambda self: self.path / "checkpoints" / "last.pt")
    best = property(lambda self: self.path / "checkpoints" / "best.pt")

    def create(self):
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)

    def log(self, line: str):
        with open(self.log_file, "a") as f:
            f.write(line.rstrip("\n") + "\n")

    def append_rows(self, path, header, rows):
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            if new:
                w.writerow(header)
            w.writerows(rows)

    def truncate(self, path, header, keep):
        """Keep only the rows for which keep(row_dict) holds: used on resume, so the files
        end exactly where the checkpoint does."""
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if keep(r)]
        write_csv(path, header, [[r[h] for h in header] for r in rows])

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        with open(self.metrics, newline="") as f:
            return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]

    def write_json(self, name, data):
        atomic_write_text(self.path / name, json.dumps(data, indent=2) + "\n")

    def read_json(self, name):
        return json.loads((self.path / name).read_text())
