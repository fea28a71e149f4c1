"""`cnnlab train --tensorboard`: a trainer hook that logs a run for TensorBoard.

    tensorboard --logdir runs/        # every run trained with --tensorboard, side by side

It writes event files to RUN_DIR/tensorboard/ (cnnlab.dirs names it):

    loss/train_iteration, lr      every training step
    loss/train, loss/val,         every epoch's end (x axis: the iteration, so the epoch points sit on
    accuracy/train, accuracy/val  the per-iteration curve)
    filters/first_conv            every epoch's end: the first convolution's filters as one image
                                  (cnnlab.models.filters; none for a model without a convolution)
    the graph                     once, when a new run starts (traced on a copy of the model)
    test/accuracy, test/loss      at the end, with the summary as text

TensorBoard is an optional extra (`pip install cnnlab[tensorboard]`): it is imported only when
a run asks for it, and `require_tensorboard` (called by the config validation) turns its absence
into one error line before any data is read. A resumed run drops the events logged after its
checkpoint (`purge_step`), so the curves continue without a doubled stretch. With several
processes only rank 0 logs.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings

from cnnlab.errors import CnnlabError
from cnnlab.train.hooks import Hook

INSTALL_HINT = "pip install 'cnnlab[tensorboard]'"


def installed() -> bool:
    """Whether the tensorboard package can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):
        return False


def require_tensorboard():
    """Raise a one-line CnnlabError when the tensorboard package is not installed."""
    if not installed():
        raise CnnlabError(f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL_HINT} "
                          "(or train without --tensorboard)")


def _summary_writer():
    require_tensorboard()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # an installed but broken or too old tensorboard
        raise CnnlabError(f"--tensorboard could not load TensorBoard ({e}): {INSTALL_HINT}") from None
    return SummaryWriter


def _plain_model(model):
    """The nn.Module itself, without a torch.compile or DistributedDataParallel wrapper."""
    from torch.nn.parallel import DistributedDataParallel

    model = getattr(model, "_orig_mod", model)
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


class TensorBoardLogger(Hook):
    """Scalars every step and epoch, the filter grid every epoch and the graph once (see the module)."""

    def __init__(self):
        self.writer = None

    def on_start(self, t):
        if not getattr(t, "main", True):
            return
        if self.writer is not None:
            self.writer.close()
        SummaryWriter = _summary_writer()
        step = t.progress.step
        self.writer = SummaryWriter(log_dir=str(t.run.tensorboard), purge_step=step + 1 if step else None,
                                    flush_secs=10)
        if step == 0:
            self.writer.add_text("config", "```\n" + t.config.to_yaml() + "```", 0)
            self._graph(t)

    def _graph(self, t):
        import torch

        try:
            model = copy.deepcopy(_plain_model(t.engine.torch_model())).float().cpu().eval()
            with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns it is deprecated
                warnings.simplefilter("ignore")
                self.writer.add_graph(model, torch.zeros(1, *t.data.shape))
        except Exception as e:  # noqa: BLE001 - a model the tracer cannot follow: the rest is still logged
            t.log(f"tensorboard: the model graph could not be traced ({type(e).__name__}), so it is not shown")

    def on_step(self, t, loss, n):
        if self.writer is not None:
            step = t.progress.step
            self.writer.add_scalar("loss/train_iteration", loss, step)
            self.writer.add_scalar("lr", t.engine.lr(), step)

    def on_epoch_end(self, t, row):
        if self.writer is None:
            return
        step = t.progress.step
        for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("accuracy/train", "train_acc"),
                         ("accuracy/val", "val_acc")):
            self.writer.add_scalar(tag, row[key], step)
        self._filters(t, step)
        self.writer.flush()

    def _filters(self, t, step):
        from cnnlab.models.filters import filter_mosaic, filter_tiles, first_conv

        found = first_conv(_plain_model(t.engine.torch_model()))
        if found is not None:
            self.writer.add_image("filters/first_conv", filter_mosaic(filter_tiles(found[1].weight)), step,
                                  dataformats="HWC")

    def on_checkpoint(self, t, path, which):
        if self.writer is not None:
            self.writer.flush()  # a run killed later keeps its curves up to the checkpoint

    def on_end(self, t, summary):
        if self.writer is None:
            return
        step = t.progress.step
        for tag, key in (("test/accuracy", "test_acc"), ("test/loss", "test_loss")):
            if isinstance(summary.get(key), (int, float)):
                self.writer.add_scalar(tag, summary[key], step)
        self.writer.add_text("summary", "\n".join(f"    {k}: {v}" for k, v in summary.items() if k != "environment"),
                             step)
        self.writer.close()
        self.writer = None
