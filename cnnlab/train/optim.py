"""Optimizers by name.

`build_optimizer(model, name, lr, ...)` returns a `torch.optim.Optimizer`: sgd (with
momentum and Nesterov), momentum and nesterov (SGD with momentum 0.9 unless `momentum` says
otherwise, plain or Nesterov), adam, adamw, adagrad, adadelta, rmsprop or muon (orthogonalised
momentum for convolution filters, Nesterov SGD for the rest; cnnlab.train.muon). `DEFAULT_LR` is the
one table of optimizer names, for both engines. `momentum`/`nesterov` apply to SGD only (give RMSprop momentum through `momentum` in the optimizer args).
Weight decay is applied to weights only: biases and normalisation parameters (every
parameter with fewer than two dimensions) are left undecayed, as is usual for convnets.
AdamW decays decoupled from the gradient (Loshchilov & Hutter, 2019); the others add
`weight_decay * w` to the gradient (L2).

Extra optimizer arguments pass through to torch (e.g. `betas`, `eps`, `alpha`), except
`lookahead_k` and `lookahead_alpha`, which wrap the optimizer in Lookahead (see
`cnnlab.train.lookahead`): `optimizer_args: {lookahead_k: 5, lookahead_alpha: 0.5}`.
"""

from __future__ import annotations

import torch

from cnnlab.errors import CnnlabError
from cnnlab.train.lookahead import Lookahead
from cnnlab.train.muon import Muon, muon_groups

# Usual starting points; `cnnlab lr-find` measures a better one for a given model and data.
DEFAULT_LR = {"sgd": 0.05, "momentum": 0.05, "nesterov": 0.05, "adam": 1e-3, "adamw": 1e-3, "adagrad": 1e-2, "adadelta": 1.0, "rmsprop": 1e-3,
              "muon": 0.24}

_TORCH = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad,
          "adadelta": torch.optim.Adadelta, "rmsprop": torch.optim.RMSprop}


def param_groups(model, weight_decay: float, lr_scale: dict | None = None):
    """Weights (decayed) and biases/norms (not), of the parameters that train. `lr_scale` (parameter
    -> factor, e.g. a pretrained backbone's `backbone_lr_mult`) puts the scaled parameters in groups
    of their own, after the unscaled ones, each with its factor as "lr_scale"."""
    decay, no_decay, scaled = [], [], {}
    for p in model.parameters():
        if p.requires_grad:
            factor = float(lr_scale.get(p, 1.0)) if lr_scale else 1.0
            if factor == 1.0:
                (decay if p.ndim >= 2 else no_decay).append(p)
            else:
                scaled.setdefault((factor, p.ndim >= 2), []).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    for (factor, decayed), params in scaled.items():
        groups.append({"params": params, "weight_decay": weight_decay if decayed else 0.0, "lr_scale": factor})
    return groups


def optimizer_names() -> list[str]:
    return sorted(DEFAULT_LR)


def build_optimizer(model, name: str, lr: float | None = None, momentum: float = 0.9, nesterov: bool = False,
                    weight_decay: float = 0.0, lr_scale: dict | None = None, **args) -> torch.optim.Optimizer:
    name = name.lower()
    if name not in DEFAULT_LR:
        raise CnnlabError(f"unknown optimizer '{name}': choose one of {', '.join(optimizer_names())}")
    lr = DEFAULT_LR[name] if lr is None else lr
    if lr <= 0:
        raise CnnlabError(f"learning rate must be positive, got {lr}")
    args = dict(args)
    la_k, la_alpha = args.pop("lookahead_k", None), args.pop("lookahead_alpha", None)
    try:
        if name == "muon":  # its own groups: filters, head, biases (cnnlab.train.muon.muon_groups)
            keys = ("head_lr", "bias_lr", "sgd_momentum")
            groups = muon_groups(model, lr, weight_decay, lr_scale=lr_scale, **{k: args.pop(k) for k in keys if k in args})
            return _lookahead(Muon(groups, lr=lr, momentum=momentum, nesterov=True, **args), la_k, la_alpha)
    except (TypeError, ValueError) as e:
        raise CnnlabError(f"bad optimizer_args for 'muon': {e} (it takes head_lr, bias_lr, sgd_momentum, ns_steps, "
                          "normalize)") from None
    groups = param_groups(model, weight_decay, lr_scale)
    for g in groups:
        if "lr_scale" in g:
            g["lr"] = lr * g["lr_scale"]
    try:
        if name in ("momentum", "nesterov"):
            opt = torch.optim.SGD(groups, lr=lr, momentum=momentum or 0.9, nesterov=name == "nesterov", **args)
        elif name == "sgd":
            opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, **args)
        else:
            opt = _TORCH[name](groups, lr=lr, **args)
    except (TypeError, ValueError) as e:
        raise CnnlabError(f"bad optimizer_args for '{name}': {e}") from None
    return _lookahead(opt, la_k, la_alpha)


def _lookahead(opt, la_k, la_alpha):
    if la_k is None and la_alpha is None:
        return opt
    try:
        return Lookahead(opt, k=5 if la_k is None else la_k, alpha=0.5 if la_alpha is None else la_alpha)
    except (TypeError, ValueError) as e:
        raise CnnlabError(f"bad optimizer_args: {e} (e.g. lookahead_k: 5, lookahead_alpha: 0.5)") from None
