"""What a person sees while a run trains: a live bar on a terminal, one table row per epoch.

The bar (tqdm, on stderr) shows loss, accuracy, images/s, LR and ETA; it only appears when
stderr is a terminal. The epoch table goes to stdout and to train.log, so a log file or a
CI console gets one compact fixed-width row per epoch.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

COLUMNS = [("epoch", 7, "{:>7}"), ("train_loss", 10, "{:>10.4f}"), ("train_acc", 9, "{:>9.2%}"),
           ("val_loss", 9, "{:>9.4f}"), ("val_acc", 8, "{:>8.2%}"), ("lr", 9, "{:>9.2e}"),
           ("seconds", 8, "{:>8.1f}"), ("img/s", 8, "{:>8.0f}")]


class EpochTable:
    def __init__(self, run, quiet=False):
        self.run, self.quiet = run, quiet

    def _emit(self, line):
        if self.run is not None:  # None: a process that writes nothing (not rank 0)
            self.run.log(line)
        if not self.quiet:
            tqdm.write(line, file=sys.stdout)

    def message(self, line):
        self._emit(line)

    def header(self):
        self._emit("  ".join(f"{name:>{w}}" for name, w, _ in COLUMNS))

    def row(self, row: dict, images_per_s: float):
        values = {**row, "img/s": images_per_s}
        cells = []
        for name, w, fmt in COLUMNS:
            v = values[name]
            cells.append(f"{'nan':>{w}}" if isinstance(v, float) and v != v else fmt.format(v))
        self._emit("  ".join(cells))


class StepBar:
    def __init__(self, total, disable=False):
        self.total = total
        self.enabled = not disable and sys.stderr.isatty()
        self.bar = None

    def __enter__(self):
        return self

    def start_epoch(self, epoch, epochs, start_batch):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.bar = tqdm(total=self.total, initial=start_batch, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                        dynamic_ncols=True, file=sys.stderr)
        self.t0, self.images = time.perf_counter(), 0

    def update(self, loss, acc, n, lr):
        if self.bar is None:
            return
        self.images += n
        rate = self.images / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"loss {loss:.4f} acc {acc:.2%} {rate:,.0f} img/s lr {lr:.2e}", refresh=False)
        self.bar.update(1)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
