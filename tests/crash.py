"""Stand-ins for a crash, shared by the tests that kill a run and resume it."""

from __future__ import annotations

from cnnlab.checkpoint import load_checkpoint
from cnnlab.train.hooks import Hook


class Killed(Exception):
    """Raised where a real run would have been killed."""


class DieAtCheckpoint(Hook):
    """The process 'dies' right after the checkpoint written at `step`."""

    def __init__(self, step):
        self.step = step

    def on_checkpoint(self, t, path, which):
        if t.progress.step == self.step:
            raise Killed


def last_weights(run):
    return load_checkpoint(run / "checkpoints/last.pt")["model_state"]
