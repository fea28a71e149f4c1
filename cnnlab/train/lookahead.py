"""Lookahead (Zhang, Lucas, Hinton & Ba, "Lookahead optimizer: k steps forward, 1 step
back", NeurIPS 2019), wrapped around any optimizer.

The inner ("fast") optimizer takes `k` steps; then the slow weights move a fraction `alpha`
towards the fast ones and the fast weights restart from there:

    phi <- phi + alpha * (theta_k - phi);   theta <- phi

Slow weights start equal to the weights before the first step. The wrapper shares its
`param_groups` with the inner optimizer, so learning-rate schedules act on the inner one,
and its state dict holds the inner state, the slow weights and the step counter, so a
resumed run continues exactly.
"""

from __future__ import annotations

import torch


class Lookahead(torch.optim.Optimizer):
    def __init__(self, base: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if int(k) < 1:
            raise ValueError(f"lookahead k must be at least 1, got {k}")
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f"lookahead alpha must be in (0, 1], got {alpha}")
        self.base, self.k, self.alpha = base, int(k), float(alpha)
        self.fast_steps = 0
        super().__init__(base.param_groups, base.defaults)
        self.param_groups = base.param_groups  # the very same dicts: the schedule sets the inner lr

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        for p in self._params():
            if "slow" not in self.state[p]:
                self.state[p]["slow"] = p.detach().clone()
        loss = self.base.step(closure)
        self.fast_steps += 1
        if self.fast_steps % self.k == 0:
            for p in self._params():
                slow = self.state[p]["slow"]
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True):
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        params = self._params()
        slow = [self.state[p]["slow"].clone() if "slow" in self.state[p] else None for p in params]
        return {"base": self.base.state_dict(), "slow": slow, "fast_steps": self.fast_steps,
                "k": self.k, "alpha": self.alpha}

    def load_state_dict(self, state):
        self.base.load_state_dict(state["base"])
        self.param_groups = self.base.param_groups  # load_state_dict replaced the inner group dicts
        self.fast_steps = int(state["fast_steps"])
        for p, s in zip(self._params(), state["slow"]):
            if s is None:
                self.state[p].pop("slow", None)
            else:
                self.state[p]["slow"] = s.to(p.device, p.dtype).clone()

    def __repr__(self):
        return f"Lookahead(k={self.k}, alpha={self.alpha}, base={self.base!r})"
