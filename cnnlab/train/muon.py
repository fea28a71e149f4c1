"""Muon: momentum whose update for each convolution filter bank is orthogonalised.

K. Jordan et al., "Muon: an optimizer for hidden layers in neural networks" (2024), as used for
the convolution filters in the fastest CIFAR-10 recipes. For a filter bank W (out, in, k, k)
with gradient G and momentum buffer B:

    B <- momentum * B + G;   U = G + momentum * B  (Nesterov)  or  B
    W <- W * sqrt(out) / |W|                        (normalise: the net after it is scale-free, BN)
    W <- W - lr * NS5(U as an (out, in*k*k) matrix)

where NS5 is five Newton-Schulz iterations that map a matrix to the nearest semi-orthogonal one
(in bfloat16; coefficients 3.4445, -4.7750, 2.0315). Every other parameter (the fc head, biases,
norm shifts) takes Nesterov SGD in the same optimizer, in groups with their own learning rate and
momentum (`orthogonal: False`); `weight_decay` there enters the gradient, before momentum, as
`weight_decay / initial_lr * W`, so each step at full rate removes `weight_decay` of the weights in
every group whatever its rate (as torch's SGD with weight_decay = wd / lr per group), and the decay
follows the schedule.

torch.optim.Muon (PyTorch 2.9+) orthogonalises 2-D parameters only and refuses 4-D convolution
filters, hence this class; it is one entry of the optimizer table (cnnlab.train.optim, "muon").
"""

from __future__ import annotations

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """An approximately semi-orthogonal matrix with the singular vectors of the 2-D `g`."""
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    x = x / (x.norm() + eps)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr=0.24, momentum=0.6, nesterov=True, ns_steps=5, normalize=True,
                 weight_decay=0.0, orthogonal=True):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"Muon needs lr > 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      normalize=normalize, weight_decay=weight_decay, orthogonal=orthogonal))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"] and not group["orthogonal"]:
                    g = g.add(p, alpha=group["weight_decay"] / group.get("initial_lr", lr))
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(mom).add_(g)
                u = g.add(buf, alpha=mom) if group["nesterov"] else buf
                if group["orthogonal"] and p.ndim >= 2:
                    if group["normalize"]:
                        p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
                    p.add_(newton_schulz(u.reshape(len(u), -1), group["ns_steps"]).view_as(p), alpha=-lr)
                else:
                    p.add_(u, alpha=-lr)
        return loss


def muon_groups(model, lr: float, weight_decay: float = 0.0, head_lr: float | None = None,
                bias_lr: float | None = None, sgd_momentum: float = 0.85, lr_scale: dict | None = None):
    """Muon's parameter groups: convolution filters (4-D) orthogonalised at `lr`; 2-D weights (the
    fc head) at `head_lr` and 1-D parameters (biases, norm shifts) at `bias_lr` by Nesterov SGD with
    momentum `sgd_momentum` and `weight_decay` (both rates default to `lr`). The fast
    recipes use head_lr 1340 and bias_lr 106 at batch 2000: SGD rates for cnnlab's mean loss scale
    with the batch size (the published 0.67 and 0.053 are rates for a summed loss: times 2000).
    The orthogonalised update does not depend on the gradient's scale, so `lr` does not."""
    groups = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        factor = float(lr_scale.get(p, 1.0)) if lr_scale else 1.0
        kind = "filters" if p.ndim >= 4 else ("head" if p.ndim >= 2 else "bias")
        groups.setdefault((kind, factor), []).append(p)
    out = []
    order = {"filters": 0, "head": 1, "bias": 2}  # the filters' group first: its rate is the one logged
    for (kind, factor), params in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        if kind == "filters":
            g = {"params": params, "orthogonal": True, "lr": lr * factor}
        else:
            g = {"params": params, "orthogonal": False, "momentum": sgd_momentum, "weight_decay": weight_decay,
                 "lr": ((head_lr if kind == "head" else bias_lr) or lr) * factor}
        g["lr_scale"] = g["lr"] / lr  # the group's rate follows a resumed run's new --lr (set_base_lr)
        out.append(g)
    return out
