"""Exponential moving average of model weights (Polyak & Juditsky, 1992; as used by
EfficientNet and most modern recipes).

    ema <- decay * ema + (1 - decay) * weights      after every optimizer step

Evaluating the averaged copy often gives a smoother, slightly better model than the last
weights. With `warmup=True` the decay ramps as min(decay, (1 + n) / (10 + n)) so the early
average is not dominated by the random initial weights. Buffers (batch-norm statistics)
are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module):
        d = self.current_decay()
        self.updates += 1
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1 - d)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict):
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
