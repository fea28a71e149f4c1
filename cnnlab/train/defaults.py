"""The hooks a training config asks for, in the order the trainer runs them.

    hooks = default_hooks(config)     # [DataInit(), TransferHook(config), ..., TimeToAccuracy()]

cnnlab.train.loop.Trainer runs these, then the caller's own hooks, then the Checkpointer. This
module sits above every module that defines a built-in hook (cnnlab.train.hooks, .transfer,
.tensorboard), so those import only `Hook` and never this list. A new built-in hook is one line
here, under the config key that turns it on:

    if config.my_option:
        hooks.append(MyHook(config.my_option))
"""

from __future__ import annotations

from cnnlab.train.hooks import DataInit, EarlyStop, Hook, TimeBudget, TimeToAccuracy, WeightAverage
from cnnlab.train.tensorboard import TensorBoardLogger
from cnnlab.train.transfer import TransferHook


def default_hooks(config) -> list[Hook]:
    """The built-in hooks a config asks for, in running order, without the Checkpointer."""
    hooks = [DataInit()]
    if config.pretrained:  # before any hook that copies the weights (the weight average)
        hooks.append(TransferHook(config))
    if config.ema:
        hooks.append(WeightAverage(config.ema))
    if config.max_seconds:
        hooks.append(TimeBudget(config.max_seconds))
    if config.early_stop is not None:
        hooks.append(EarlyStop(config.early_stop))
    if config.tensorboard:
        hooks.append(TensorBoardLogger())
    hooks.append(TimeToAccuracy())
    return hooks
