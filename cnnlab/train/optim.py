"""The optimizer table: every optimizer name, its default learning rate, and each engine's builder.

    build_optimizer(model, "adamw", lr=None, weight_decay=0.05)   a torch.optim.Optimizer
    default_lr("sgd")                                             0.05
    check_optimizer("muon", engine="scratch")                    CnnlabError: that engine has none
    optimizer_names("scratch")                                    the names an engine can build

`OPTIMIZERS` maps a name to an `OptimizerEntry`: the default learning rate (a usual starting point;
`cnnlab lr-find` measures a better one for a given model and data) and a builder per engine. The
PyTorch builders are registered here; the NumPy engine registers its own against the same names in
cnnlab.scratch.optim, so validation asks this table which engine supports which optimizer. Adding an
optimizer is one registered function per engine (the first registration gives the default rate):

    @register_optimizer("nadam", default_lr=2e-3)
    def nadam(model, lr, momentum, nesterov, weight_decay, lr_scale, args):
        return torch.optim.NAdam(decay_groups(model, lr, weight_decay, lr_scale), lr=lr, **args)

    @register_optimizer("nadam", engine="scratch")         # in cnnlab.scratch.optim, if it has one
    def nadam(params, lr, momentum, nesterov, weight_decay, no_decay, args): ...

`momentum` and `nesterov` are the config's keys, `args` its `optimizer_args` (a dict: an optimizer
may have a `momentum` of its own there, as RMSprop does).

The names: sgd (with `momentum` and `nesterov`), momentum and nesterov (SGD with momentum 0.9 unless
`momentum` says otherwise, plain or Nesterov: `sgd_settings`, the same in both engines), adam, adamw,
adagrad, adadelta, rmsprop and muon (PyTorch only; orthogonalised momentum for convolution filters,
Nesterov SGD for the rest, cnnlab.train.muon: `momentum` is its filters' momentum, its other keys
come in the optimizer args, see `muon` below). `momentum`/`nesterov` mean nothing to the others
(give RMSprop momentum through `momentum` in the optimizer args).
Weight decay is applied to weights only: biases and normalisation parameters (every
parameter with fewer than two dimensions) are left undecayed, as is usual for convnets.
AdamW decays decoupled from the gradient (Loshchilov & Hutter, 2019); the others add
`weight_decay * w` to the gradient (L2).

Extra optimizer arguments pass through to torch (e.g. `betas`, `eps`, `alpha`), except
`lookahead_k` and `lookahead_alpha`, which wrap the optimizer in Lookahead (see
`cnnlab.train.lookahead`): `optimizer_args: {lookahead_k: 5, lookahead_alpha: 0.5}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from cnnlab.errors import CnnlabError
from cnnlab.train.lookahead import Lookahead
from cnnlab.train.muon import Muon, muon_groups


@dataclass
class OptimizerEntry:
    name: str
    default_lr: float
    builders: dict[str, Callable] = field(default_factory=dict)  # engine name -> builder


OPTIMIZERS: dict[str, OptimizerEntry] = {}


def register_optimizer(name: str, default_lr: float | None = None, engine: str = "torch"):
    """Decorator: the builder of optimizer `name` for `engine`. The name's first registration gives
    its `default_lr`; a later one may leave it out or repeat it."""
    def register(build):
        entry = OPTIMIZERS.get(name)
        if entry is None:
            if default_lr is None:
                raise ValueError(f"optimizer '{name}' needs a default_lr where it is first registered")
            entry = OPTIMIZERS[name] = OptimizerEntry(name, float(default_lr))
        elif default_lr is not None and float(default_lr) != entry.default_lr:
            raise ValueError(f"optimizer '{name}' has default_lr {entry.default_lr}, not {default_lr}")
        if engine in entry.builders:
            raise ValueError(f"optimizer '{name}' is registered twice for the {engine} engine")
        entry.builders[engine] = build
        return build

    return register


def optimizer_names(engine: str | None = None) -> list[str]:
    """Every optimizer name, or those `engine` can build."""
    return sorted(n for n, e in OPTIMIZERS.items() if engine is None or engine in e.builders)


def check_optimizer(name: str, engine: str | None = None) -> OptimizerEntry:
    """The table's entry for `name`; a CnnlabError for an unknown name, or one `engine` cannot build."""
    entry = OPTIMIZERS.get(name.lower())
    if entry is None:
        raise CnnlabError(f"unknown optimizer '{name.lower()}': choose one of {', '.join(optimizer_names())}")
    if engine is not None and engine not in entry.builders:
        others = " or ".join(sorted(entry.builders))
        raise CnnlabError(f"the {engine} engine has no optimizer '{entry.name}': choose one of "
                          f"{', '.join(optimizer_names(engine))}, or use --engine {others}")
    return entry


def default_lr(name: str) -> float:
    return check_optimizer(name).default_lr


def sgd_settings(name: str, momentum: float, nesterov: bool) -> dict:
    """SGD's momentum and Nesterov flag for the names sgd, momentum and nesterov, in both engines:
    sgd takes `momentum` and `nesterov` as given (Nesterov needs momentum); momentum and nesterov
    take `momentum` (0.9 where it is 0) and are plain and Nesterov momentum whatever `nesterov` says."""
    if name == "sgd":
        return {"momentum": momentum, "nesterov": bool(nesterov and momentum > 0)}
    return {"momentum": momentum or 0.9, "nesterov": name == "nesterov"}


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


def decay_groups(model, lr: float, weight_decay: float, lr_scale: dict | None = None):
    """`param_groups`, each scaled group at its own rate `lr * lr_scale`: what a builder passes to torch."""
    groups = param_groups(model, weight_decay, lr_scale)
    for g in groups:
        if "lr_scale" in g:
            g["lr"] = lr * g["lr_scale"]
    return groups


def build_optimizer(model, name: str, lr: float | None = None, momentum: float = 0.9, nesterov: bool = False,
                    weight_decay: float = 0.0, lr_scale: dict | None = None, optimizer_args: dict | None = None,
                    **args) -> torch.optim.Optimizer:
    """The optimizer `name` for `model`'s parameters; `optimizer_args` (the config's) and keyword
    `args` are the optimizer's own arguments."""
    entry = check_optimizer(name, "torch")
    lr = entry.default_lr if lr is None else lr
    if lr <= 0:
        raise CnnlabError(f"learning rate must be positive, got {lr}")
    args = {**(optimizer_args or {}), **args}
    la_k, la_alpha = args.pop("lookahead_k", None), args.pop("lookahead_alpha", None)
    try:
        opt = entry.builders["torch"](model, lr, momentum, nesterov, weight_decay, lr_scale, args)
    except (TypeError, ValueError) as e:
        raise CnnlabError(f"bad optimizer_args for '{entry.name}': {e}") from None
    return _lookahead(opt, la_k, la_alpha)


def _lookahead(opt, la_k, la_alpha):
    if la_k is None and la_alpha is None:
        return opt
    try:
        return Lookahead(opt, k=5 if la_k is None else la_k, alpha=0.5 if la_alpha is None else la_alpha)
    except (TypeError, ValueError) as e:
        raise CnnlabError(f"bad optimizer_args: {e} (e.g. lookahead_k: 5, lookahead_alpha: 0.5)") from None


# ---- the PyTorch builders -------------------------------------------------------------------

def _multi_tensor(args: dict) -> dict:
    """The update as one multi-tensor (foreach) pass unless the args choose: torch picks it only for
    CUDA tensors, and on the CPU its per-parameter Python loop was 1.2 ms of LeNet-5's 10.7 ms step
    (Adam, 10 tensors); `optimizer_args: {foreach: false}` restores the loop."""
    return args if "foreach" in args or "fused" in args else {**args, "foreach": True}


def _sgd(name):
    def build(model, lr, momentum, nesterov, weight_decay, lr_scale, args):
        return torch.optim.SGD(decay_groups(model, lr, weight_decay, lr_scale), lr=lr,
                               **sgd_settings(name, momentum, nesterov), **_multi_tensor(args))

    return build


def _torch_class(cls):
    """A torch.optim class that has no use for the config's momentum and nesterov."""
    def build(model, lr, momentum, nesterov, weight_decay, lr_scale, args):
        return cls(decay_groups(model, lr, weight_decay, lr_scale), lr=lr, **_multi_tensor(args))

    return build


for _name in ("sgd", "momentum", "nesterov"):
    register_optimizer(_name, default_lr=0.05)(_sgd(_name))
register_optimizer("adam", default_lr=1e-3)(_torch_class(torch.optim.Adam))
register_optimizer("adamw", default_lr=1e-3)(_torch_class(torch.optim.AdamW))
register_optimizer("adagrad", default_lr=1e-2)(_torch_class(torch.optim.Adagrad))
register_optimizer("adadelta", default_lr=1.0)(_torch_class(torch.optim.Adadelta))
register_optimizer("rmsprop", default_lr=1e-3)(_torch_class(torch.optim.RMSprop))

MUON_ARGS = ("head_lr", "bias_lr", "sgd_momentum", "nesterov", "ns_steps", "normalize")


@register_optimizer("muon", default_lr=0.24)
def muon(model, lr, momentum, nesterov, weight_decay, lr_scale, args):
    """Muon with its own groups (filters, head, biases: cnnlab.train.muon.muon_groups). The config's
    `momentum` is the filters' momentum; the optimizer args give the rest: head_lr, bias_lr,
    sgd_momentum (the head's and biases' momentum), nesterov (default true, every group), ns_steps,
    normalize. A `momentum` among the optimizer args, or `nesterov: true` in the config against
    `nesterov: false` in the args, would be two values for one setting, and is refused."""
    takes = f"Muon's optimizer_args are {', '.join(MUON_ARGS)}"
    if "momentum" in args:
        raise CnnlabError(f"muon takes its filters' momentum from --momentum (config key momentum), not from "
                          f"optimizer_args; the head's and biases' is optimizer_args sgd_momentum ({takes})")
    if nesterov and "nesterov" in args and not args["nesterov"]:
        raise CnnlabError(f"--nesterov asks muon for Nesterov momentum and optimizer_args nesterov: false for plain "
                          f"momentum: drop one ({takes})")
    unknown = sorted(set(args) - set(MUON_ARGS))
    if unknown:
        raise CnnlabError(f"bad optimizer_args for 'muon': no option '{unknown[0]}' ({takes})")
    group_keys = ("head_lr", "bias_lr", "sgd_momentum")
    own = {k: v for k, v in args.items() if k in group_keys}
    rest = {k: v for k, v in args.items() if k not in group_keys}
    groups = muon_groups(model, lr, weight_decay, lr_scale=lr_scale, **own)
    return Muon(groups, lr=lr, momentum=momentum, **{"nesterov": True, **rest})
