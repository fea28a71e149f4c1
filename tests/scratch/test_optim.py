"""Each optimizer's 20-step trajectory against torch.optim with the same settings."""

import numpy as np
import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.scratch import optim

CASES = [  # (ours, torch's, kwargs)
    ("sgd", torch.optim.SGD, dict(lr=0.1)),
    ("sgd", torch.optim.SGD, dict(lr=0.1, weight_decay=0.05)),
    ("sgd", torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1)),
    ("sgd", torch.optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("adagrad", torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.02, initial_accumulator_value=0.1)),
    ("adadelta", torch.optim.Adadelta, dict(lr=1.0, rho=0.8, weight_decay=0.01)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=0.01)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01)),
    ("adam", torch.optim.Adam, dict(lr=0.01)),
    ("adam", torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), amsgrad=True, weight_decay=0.1)),
    ("adamw", torch.optim.AdamW, dict(lr=0.01)),
    ("adamw", torch.optim.AdamW, dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
]


def _grad(p, c):
    # a non-convex landscape so that every step moves differently
    return np.sin(3 * p) + 0.1 * p ** 3 + c


def _start():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}, {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}


def _torch_trajectory(cls, kw, start, consts, steps, no_decay=()):
    tp = {n: torch.tensor(v.copy(), requires_grad=True) for n, v in start.items()}
    wd = cls([torch.zeros(1)], **kw).defaults["weight_decay"]  # AdamW's default is 1e-2
    groups = [{"params": [tp[n]], "weight_decay": 0.0 if n in no_decay else wd} for n in tp]
    opt = cls(groups, **kw)
    for _ in range(steps):
        for n, p in tp.items():
            p.grad = torch.from_numpy(_grad(p.detach().numpy(), consts[n]))
        opt.step()
    return {n: p.detach().numpy() for n, p in tp.items()}


@pytest.mark.parametrize("name,cls,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_trajectory_matches_torch(name, cls, kw):
    start, consts = _start()
    ours = {n: v.copy() for n, v in start.items()}
    opt = getattr(optim, cls.__name__)(ours, **kw)  # ours has torch's class name
    for _ in range(20):
        opt.step({n: _grad(p, consts[n]) for n, p in ours.items()})
    want = _torch_trajectory(cls, kw, start, consts, 20)
    assert any(np.abs(ours[n] - start[n]).max() > 1e-2 for n in ours)  # the trajectory went somewhere
    for n in ours:
        np.testing.assert_allclose(ours[n], want[n], rtol=1e-6, atol=1e-9)


def test_no_decay_and_resuming_from_state_dict():
    start, consts = _start()
    kw = dict(lr=0.01, weight_decay=0.2)
    a = {n: v.copy() for n, v in start.items()}
    opt = optim.build_optimizer(a, "adam", no_decay=["b"], **kw)
    for _ in range(10):
        opt.step({n: _grad(p, consts[n]) for n, p in a.items()})
    b = {n: v.copy() for n, v in a.items()}
    resumed = optim.build_optimizer(b, "adam", lr=0.5, no_decay=["b"])
    resumed.load_state_dict(opt.state_dict())
    for _ in range(10):
        resumed.step({n: _grad(p, consts[n]) for n, p in b.items()})
    want = _torch_trajectory(torch.optim.Adam, kw, start, consts, 20, no_decay=["b"])
    for n in b:
        np.testing.assert_allclose(b[n], want[n], rtol=1e-6, atol=1e-9)


def test_names_and_bad_options():
    p = {"w": np.zeros(3)}
    assert optim.build_optimizer(p, "nesterov").hyper["nesterov"] is True
    assert optim.build_optimizer(p, "momentum").hyper["momentum"] == 0.9
    with pytest.raises(CnnlabError, match="unknown optimizer 'lbfgs'"):
        optim.build_optimizer(p, "lbfgs")
    with pytest.raises(CnnlabError, match="no option 'betas'"):
        optim.build_optimizer(p, "sgd", betas=(0.9, 0.9))
