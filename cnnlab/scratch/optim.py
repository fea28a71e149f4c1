"""Optimizers written out, with exactly the update rules and defaults of torch.optim.

    opt = Adam(net.named_params(), lr=1e-3)
    loss, grads = net.loss(x, y)
    opt.step(grads)                       # updates the arrays in place

`build_optimizer(params, name, lr, ...)` builds one by its name in the optimizer table
(cnnlab.train.optim.OPTIMIZERS), where this module registers its classes for the scratch engine.
`params` maps names to the model's live arrays. `weight_decay` is L2 added to the gradient
(`g + wd * p`), except in AdamW, which decays the weights directly (`p *= 1 - lr * wd`).
`no_decay` names parameters to leave undecayed (cnnlab decays only weights of 2 or more
dimensions, see cnnlab.train.optim). `lr` is an attribute: a schedule sets it before each step.
Per parameter p with gradient g (t counts steps from 1):

    SGD       b = g (t = 1), else b = mu*b + (1 - dampening)*g;  p -= lr * (g + mu*b if nesterov else b)
    Adagrad   s += g^2;  p -= lr / (1 + (t - 1)*lr_decay) * g / (sqrt(s) + eps)
    Adadelta  v = rho*v + (1 - rho)*g^2;  d = sqrt(u + eps) / sqrt(v + eps) * g;  u = rho*u + (1 - rho)*d^2;  p -= lr*d
    RMSprop   v = alpha*v + (1 - alpha)*g^2;  a = sqrt(v - m^2) + eps (centered, m the mean of g) or sqrt(v) + eps;
              b = mu*b + g/a;  p -= lr * (b if mu else g/a)
    Adam      m = m + (1 - b1)(g - m);  v = b2*v + (1 - b2)*g^2 (amsgrad: v_hat = max(v_hat, v));
              p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.train.optim import check_optimizer, register_optimizer, sgd_settings


class Optimizer:
    defaults: dict = {}

    def __init__(self, params: dict, lr=None, weight_decay=0.0, no_decay=(), **hyper):
        unknown = sorted(set(hyper) - set(self.defaults))
        if unknown:
            raise CnnlabError(f"{type(self).__name__} has no option '{unknown[0]}': it takes {', '.join(sorted(self.defaults)) or 'none'}")
        self.params = params
        self.lr = self.defaults["lr"] if lr is None else float(lr)
        self.weight_decay = float(weight_decay)
        self.no_decay = set(no_decay)
        self.hyper = {k: v for k, v in self.defaults.items() if k != "lr"} | hyper
        self.t = 0
        self.state = {name: {} for name in params}

    def step(self, grads: dict):
        self.t += 1
        for name, p in self.params.items():
            g = grads[name]
            wd = 0.0 if name in self.no_decay else self.weight_decay
            self.update(p, g, wd, self.state[name])

    def update(self, p, g, wd, state):
        raise NotImplementedError

    def _zeros(self, state, key, p, fill=0.0):
        if key not in state:
            state[key] = np.full_like(p, fill)
        return state[key]

    def state_dict(self) -> dict:
        return {"name": type(self).__name__, "lr": self.lr, "weight_decay": self.weight_decay, "t": self.t,
                "hyper": dict(self.hyper), "state": {n: {k: v.copy() for k, v in s.items()} for n, s in self.state.items()}}

    def load_state_dict(self, d: dict):
        if d.get("name") != type(self).__name__:
            raise CnnlabError(f"optimizer state is for {d.get('name')}, not {type(self).__name__}")
        self.lr, self.weight_decay, self.t, self.hyper = d["lr"], d["weight_decay"], d["t"], dict(d["hyper"])
        self.state = {n: {k: np.array(v, copy=True) for k, v in d["state"].get(n, {}).items()} for n in self.params}


class SGD(Optimizer):
    defaults = dict(lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False)

    def update(self, p, g, wd, state):
        h = self.hyper
        if wd:
            g = g + wd * p
        if h["momentum"]:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= h["momentum"]
                buf += (1 - h["dampening"]) * g
            buf = state["momentum_buffer"]
            g = g + h["momentum"] * buf if h["nesterov"] else buf
        p -= self.lr * g


class Adagrad(Optimizer):
    defaults = dict(lr=1e-2, lr_decay=0.0, initial_accumulator_value=0.0, eps=1e-10)

    def update(self, p, g, wd, state):
        h = self.hyper
        if wd:
            g = g + wd * p
        s = self._zeros(state, "sum", p, h["initial_accumulator_value"])
        s += g * g
        clr = self.lr / (1 + (self.t - 1) * h["lr_decay"])
        p -= clr * g / (np.sqrt(s) + h["eps"])


class Adadelta(Optimizer):
    defaults = dict(lr=1.0, rho=0.9, eps=1e-6)

    def update(self, p, g, wd, state):
        rho, eps = self.hyper["rho"], self.hyper["eps"]
        if wd:
            g = g + wd * p
        v, u = self._zeros(state, "square_avg", p), self._zeros(state, "acc_delta", p)
        v *= rho
        v += (1 - rho) * g * g
        delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u *= rho
        u += (1 - rho) * delta * delta
        p -= self.lr * delta


class RMSprop(Optimizer):
    defaults = dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False)

    def update(self, p, g, wd, state):
        h = self.hyper
        if wd:
            g = g + wd * p
        v = self._zeros(state, "square_avg", p)
        v *= h["alpha"]
        v += (1 - h["alpha"]) * g * g
        if h["centered"]:
            m = self._zeros(state, "grad_avg", p)
            m += (1 - h["alpha"]) * (g - m)
            avg = np.sqrt(v - m * m) + h["eps"]
        else:
            avg = np.sqrt(v) + h["eps"]
        if h["momentum"]:
            buf = self._zeros(state, "momentum_buffer", p)
            buf *= h["momentum"]
            buf += g / avg
            p -= self.lr * buf
        else:
            p -= self.lr * g / avg


class Adam(Optimizer):
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, amsgrad=False)
    decoupled = False  # AdamW: decay the weights, not the gradient

    def update(self, p, g, wd, state):
        h = self.hyper
        b1, b2 = h["betas"]
        if wd and self.decoupled:
            p *= 1 - self.lr * wd
        elif wd:
            g = g + wd * p
        m, v = self._zeros(state, "exp_avg", p), self._zeros(state, "exp_avg_sq", p)
        m += (1 - b1) * (g - m)
        v *= b2
        v += (1 - b2) * g * g
        if h["amsgrad"]:
            vmax = self._zeros(state, "max_exp_avg_sq", p)
            np.maximum(vmax, v, out=vmax)
            v = vmax
        denom = np.sqrt(v) / np.sqrt(1 - b2 ** self.t) + h["eps"]
        p -= (self.lr / (1 - b1 ** self.t)) * m / denom


class AdamW(Adam):
    defaults = dict(Adam.defaults)
    decoupled = True

    def __init__(self, params, lr=None, weight_decay=1e-2, no_decay=(), **hyper):
        super().__init__(params, lr, weight_decay, no_decay, **hyper)


# ---- registered against the names of the optimizer table (cnnlab.train.optim.OPTIMIZERS) ----------

def _sgd(name):
    def build(params, lr, momentum, nesterov, weight_decay, no_decay, args):
        return SGD(params, lr, weight_decay, no_decay, **sgd_settings(name, momentum, nesterov), **args)

    return build


def _plain(cls):
    """An optimizer class that has no use for the config's momentum and nesterov."""
    def build(params, lr, momentum, nesterov, weight_decay, no_decay, args):
        if "betas" in args:  # a YAML list
            args = {**args, "betas": tuple(args["betas"])}
        return cls(params, lr, weight_decay, no_decay, **args)

    return build


for _name in ("sgd", "momentum", "nesterov"):
    register_optimizer(_name, engine="scratch")(_sgd(_name))
for _cls in (Adagrad, Adadelta, RMSprop, Adam, AdamW):
    register_optimizer(_cls.__name__.lower(), engine="scratch")(_plain(_cls))


def build_optimizer(params: dict, name: str, lr=None, momentum=0.9, nesterov=False, weight_decay=0.0,
                    no_decay=(), optimizer_args: dict | None = None, **args) -> Optimizer:
    """By name, as the trainer's options give it (the table's default rate where `lr` is None);
    `momentum` and `nesterov` mean what they mean to the PyTorch engine (`sgd_settings`), and
    `optimizer_args` (the config's) and keyword `args` are the optimizer's own arguments."""
    entry = check_optimizer(name, "scratch")
    lr = entry.default_lr if lr is None else lr
    args = {**(optimizer_args or {}), **args}
    try:
        return entry.builders["scratch"](params, lr, momentum, nesterov, weight_decay, no_decay, args)
    except TypeError as e:
        raise CnnlabError(f"bad optimizer_args for '{entry.name}': {e}") from None
