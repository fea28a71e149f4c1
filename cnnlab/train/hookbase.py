"""The trainer hook base class (`cnnlab.train.hooks` documents the calls and re-exports it).

It has a module of its own so that hooks living in other modules (e.g. cnnlab.train.tensorboard)
can subclass it while `cnnlab.train.hooks.default_hooks` builds them, without an import cycle.
"""

from __future__ import annotations


class Hook:
    name: str | None = None
    model_state = False

    def on_start(self, t): ...

    def on_step(self, t, loss: float, n: int): ...

    def on_epoch_end(self, t, row: dict): ...

    def on_checkpoint(self, t, path, which: str): ...

    def on_end(self, t, summary: dict): ...

    def state_dict(self):
        return None

    def load_state_dict(self, state): ...
