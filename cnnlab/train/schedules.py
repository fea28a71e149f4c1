"""Learning-rate schedules, stepped once per iteration.

Each schedule is a pure function `factor(step) -> float` that multiplies the base learning
rate; `build_schedule` wraps it in a `torch.optim.lr_scheduler.LambdaLR`, whose state (the
step count) is saved in checkpoints, so a resumed run continues on the same curve.
Epoch-based arguments are converted to steps with `steps_per_epoch`.
"""

from __future__ import annotations

import math

import torch

from cnnlab.errors import CnnlabError


def _warmup(factor, warmup_steps):
    if warmup_steps <= 0:
        return factor
    return lambda s: factor(s) * min(1.0, (s + 1) / warmup_steps)


def constant(total_steps, steps_per_epoch):
    return lambda s: 1.0


def step(total_steps, steps_per_epoch, step_epochs=None, gamma=0.1):
    """Multiply by `gamma` every `step_epochs` epochs (default: a third of the run)."""
    every = max(1, round((step_epochs or max(1, total_steps // steps_per_epoch // 3)) * steps_per_epoch))
    return lambda s: gamma ** (s // every)


def cosine(total_steps, steps_per_epoch, min_factor=0.0):
    """Cosine annealing to `min_factor` at the last step (Loshchilov & Hutter, 2017, without restarts)."""
    return lambda s: min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))


SCHEDULES = {"none": constant, "step": step, "cosine": cosine}


def schedule_names() -> list[str]:
    return sorted(SCHEDULES)


def schedule_factor(name: str, total_steps: int, steps_per_epoch: int, **args):
    name = name.lower()
    if name not in SCHEDULES:
        raise CnnlabError(f"unknown schedule '{name}': choose one of {', '.join(schedule_names())}")
    warmup_epochs = args.pop("warmup_epochs", 0)
    try:
        factor = SCHEDULES[name](total_steps, steps_per_epoch, **args)
    except TypeError as e:
        raise CnnlabError(f"bad argument for schedule '{name}': {e}") from None
    return _warmup(factor, round(warmup_epochs * steps_per_epoch))


def build_schedule(optimizer, name: str, total_steps: int, steps_per_epoch: int, **args):
    factor = schedule_factor(name, total_steps, steps_per_epoch, **args)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
