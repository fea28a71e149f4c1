"""Learning-rate schedules, stepped once per iteration.

Each schedule is a pure function `factor(step) -> float` that multiplies the base learning
rate (the config's `lr`); `build_schedule` wraps it in a `torch.optim.lr_scheduler.LambdaLR`,
whose state (the step count) is saved in checkpoints, so a resumed run continues on the same
curve. Epoch-based arguments are converted to steps with `steps_per_epoch`; `s` below is the
step, T the total number of steps, E the steps per epoch.

    none         1
    step         gamma ** floor(s / (step_epochs * E))           (default: 3 drops of gamma=0.1)
    multistep    gamma ** (number of milestones (epochs) passed)
    exponential  gamma ** (s / E)                                (gamma per epoch)
    linear       1 - (1 - e) * s / T                             (straight down to e = end_factor, 0;
                 the fast CIFAR-10 recipes' decay)
    cosine       m + (1 - m) * (1 + cos(pi * s' / T')) / 2       (Loshchilov & Hutter, 2017)
                 after a linear warmup of W steps: s' = s - W, T' = T - W; m = min_factor
    triangular, triangular2, exp_range, cyclic (with mode=...)   (Smith, WACV 2017):
                 cycle = floor(1 + s / (2 S)),  x = |s / S - 2 cycle + 1|
                 factor = m + (1 - m) * max(0, 1 - x) * scale
                 scale = 1 | 1 / 2 ** (cycle - 1) | gamma ** s   (S = step_size_epochs * E)
                 the config lr is the top of the cycle (max_lr), m * lr the bottom (base_lr)
    onecycle     Smith & Topin (2018): linear from 1/div up to 1 over pct_start*T steps, back
                 down to 1/div over as many, then down to 1/(div*final_div) at the last step

`warmup_epochs` (any schedule) multiplies the factor by a linear ramp (s + 1) / W for the
first W steps; cosine instead starts its curve after the warmup.

`SCHEDULES` is the one table of schedules, for both engines (the scratch engine steps
`schedule_factor` itself). Adding a schedule is one registered function of (T, E, its own
arguments) returning factor(step); `own_warmup=True` hands it `warmup_steps` instead of the ramp:

    @register_schedule("inverse_sqrt")
    def inverse_sqrt(total_steps, steps_per_epoch, scale_epochs=1):
        return lambda s: min(1.0, (scale_epochs * steps_per_epoch / (s + 1)) ** 0.5)
"""

from __future__ import annotations

import math

import torch

from cnnlab.errors import CnnlabError

SCHEDULES = {}  # name -> factor builder
_OWN_WARMUP = set()  # schedules that take `warmup_steps` themselves instead of the linear ramp


def register_schedule(name: str, own_warmup: bool = False):
    """Decorator: `build(total_steps, steps_per_epoch, **args) -> factor` is the schedule `name`."""
    def register(build):
        if name in SCHEDULES:
            raise ValueError(f"schedule '{name}' is registered twice")
        SCHEDULES[name] = build
        if own_warmup:
            _OWN_WARMUP.add(name)
        return build

    return register


def _warmup(factor, warmup_steps):
    if warmup_steps <= 0:
        return factor
    return lambda s: factor(s) * min(1.0, (s + 1) / warmup_steps)


@register_schedule("none")
def constant(total_steps, steps_per_epoch):
    return lambda s: 1.0


@register_schedule("step")
def step(total_steps, steps_per_epoch, step_epochs=None, gamma=0.1):
    """Multiply by `gamma` every `step_epochs` epochs (default: a third of the run)."""
    every = max(1, round((step_epochs or max(1, total_steps // steps_per_epoch // 3)) * steps_per_epoch))
    return lambda s: gamma ** (s // every)


@register_schedule("multistep")
def multistep(total_steps, steps_per_epoch, milestones=None, gamma=0.1):
    """Multiply by `gamma` at each milestone epoch (default: at 50% and 75% of the run)."""
    epochs = total_steps / steps_per_epoch
    marks = milestones if milestones is not None else [0.5 * epochs, 0.75 * epochs]
    at = sorted(round(m * steps_per_epoch) for m in marks)
    return lambda s: gamma ** sum(s >= a for a in at)


@register_schedule("exponential")
def exponential(total_steps, steps_per_epoch, gamma=0.95):
    """Multiply by `gamma` per epoch, smoothly (every step by gamma ** (1 / E))."""
    return lambda s: gamma ** (s / steps_per_epoch)


@register_schedule("linear")
def linear(total_steps, steps_per_epoch, end_factor=0.0):
    """A straight line from 1 at the first step to `end_factor` after the last one."""
    return lambda s: 1.0 - (1.0 - end_factor) * min(s, total_steps) / max(1, total_steps)


@register_schedule("cosine", own_warmup=True)
def cosine(total_steps, steps_per_epoch, min_factor=0.0, warmup_steps=0):
    """Cosine annealing to `min_factor` at the last step (Loshchilov & Hutter, 2017, without
    restarts), after an optional linear warmup (Goyal et al., 2017)."""
    span = max(1, total_steps - warmup_steps)

    def factor(s):
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        t = min(s - warmup_steps, span) / span
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


@register_schedule("cyclic")
def cyclic(total_steps, steps_per_epoch, mode="triangular", step_size_epochs=2, min_factor=0.1, gamma=0.99994):
    """Cyclical learning rates (Smith, "Cyclical learning rates for training neural networks",
    WACV 2017). `step_size_epochs` is half a cycle (the paper suggests 2-10 epochs)."""
    size = max(1, round(step_size_epochs * steps_per_epoch))
    scales = {"triangular": lambda cycle, s: 1.0,
              "triangular2": lambda cycle, s: 1.0 / 2 ** (cycle - 1),
              "exp_range": lambda cycle, s: gamma ** s}
    if mode not in scales:
        raise CnnlabError(f"unknown cyclic mode '{mode}': choose one of {', '.join(scales)}")
    scale = scales[mode]

    def factor(s):
        cycle = math.floor(1 + s / (2 * size))
        x = abs(s / size - 2 * cycle + 1)
        return min_factor + (1 - min_factor) * max(0.0, 1 - x) * scale(cycle, s)

    return factor


@register_schedule("onecycle")
def onecycle(total_steps, steps_per_epoch, pct_start=0.45, div_factor=10.0, final_div=100.0):
    """The one-cycle policy (Smith & Topin, "Super-convergence", 2018): up, down, then
    annihilation far below the start. Matches torch's OneCycleLR(three_phase=True,
    anneal_strategy="linear") with max_lr = the config lr."""
    lo, end = 1.0 / div_factor, 1.0 / (div_factor * final_div)
    up = float(pct_start * total_steps) - 1
    down = float(2 * pct_start * total_steps) - 2
    last = total_steps - 1
    if not (0 < up < down < last):
        raise CnnlabError(f"onecycle needs 0 < pct_start < 0.5 and enough steps (pct_start={pct_start}, {total_steps} steps)")

    def lerp(a, b, t):
        return a + (b - a) * t

    def factor(s):
        if s <= up:
            return lerp(lo, 1.0, s / up)
        if s <= down:
            return lerp(1.0, lo, (s - up) / (down - up))
        return lerp(lo, end, min(s - down, last - down) / (last - down))

    return factor


def _cyclic_mode(mode):
    def build(total_steps, steps_per_epoch, **args):
        return cyclic(total_steps, steps_per_epoch, mode=mode, **args)

    return build


for _mode in ("triangular", "triangular2", "exp_range"):
    register_schedule(_mode)(_cyclic_mode(_mode))


def schedule_names() -> list[str]:
    return sorted(SCHEDULES)


def schedule_factor(name: str, total_steps: int, steps_per_epoch: int, **args):
    name = name.lower()
    if name not in SCHEDULES:
        raise CnnlabError(f"unknown schedule '{name}': choose one of {', '.join(schedule_names())}")
    args = dict(args)
    warmup_steps = round(args.pop("warmup_epochs", 0) * steps_per_epoch)
    if name in _OWN_WARMUP:  # e.g. cosine: its curve starts after the warmup instead of under it
        args["warmup_steps"], warmup_steps = warmup_steps, 0
    try:
        factor = SCHEDULES[name](total_steps, steps_per_epoch, **args)
    except TypeError as e:
        raise CnnlabError(f"bad argument for schedule '{name}': {e}") from None
    return _warmup(factor, warmup_steps)


def build_schedule(optimizer, name: str, total_steps: int, steps_per_epoch: int, **args):
    factor = schedule_factor(name, total_steps, steps_per_epoch, **args)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
