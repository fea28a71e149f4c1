"""Optimizers by name, Lookahead against its formula step by step, exact resume, EMA."""

import math

import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.train.ema import ModelEMA
from cnnlab.train.lookahead import Lookahead
from cnnlab.train.optim import build_optimizer, default_lr, optimizer_names
from cnnlab.train.schedules import build_schedule


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _loss(model, i):
    g = torch.Generator().manual_seed(100 + i)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    return nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("name", optimizer_names("torch"))
def test_every_optimizer_builds_and_lowers_the_loss(name):
    assert set(optimizer_names()) >= {"sgd", "adam", "adamw", "adagrad", "adadelta", "rmsprop"}
    model = _model()
    opt = build_optimizer(model, name)
    assert opt.param_groups[0]["lr"] == default_lr(name)
    first = _loss(model, 0).item()
    for _ in range(30):
        opt.zero_grad()
        _loss(model, 0).backward()
        opt.step()
    assert _loss(model, 0).item() < first


def test_sgd_momentum_nesterov_and_decay_groups():
    model = _model()
    opt = build_optimizer(model, "sgd", 0.1, momentum=0.8, nesterov=True, weight_decay=5e-4)
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.8
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 5e-4 and opt.param_groups[1]["weight_decay"] == 0.0
    assert all((id(p) in decayed) == (p.ndim >= 2) for p in model.parameters())


def test_bad_names_and_arguments_are_user_errors():
    with pytest.raises(CnnlabError, match="unknown optimizer 'adamax'"):
        build_optimizer(_model(), "adamax")
    with pytest.raises(CnnlabError, match="bad optimizer_args"):
        build_optimizer(_model(), "adam", bogus=1)
    with pytest.raises(CnnlabError, match="lookahead"):
        build_optimizer(_model(), "sgd", lookahead_k=0)


def test_lookahead_follows_the_paper_step_by_step():
    """phi <- phi + alpha (theta_k - phi), theta <- phi every k steps; compare with a hand loop."""
    k, alpha, lr = 3, 0.5, 0.1
    model, ref = _model(), _model()
    opt = build_optimizer(model, "sgd", lr, momentum=0.9, lookahead_k=k, lookahead_alpha=alpha)
    assert isinstance(opt, Lookahead)
    inner = build_optimizer(ref, "sgd", lr, momentum=0.9)
    slow = [p.detach().clone() for p in ref.parameters()]
    for i in range(10):
        for m, o in ((model, opt), (ref, inner)):
            o.zero_grad()
            _loss(m, i).backward()
            o.step()
        if (i + 1) % k == 0:
            with torch.no_grad():
                for p, s in zip(ref.parameters(), slow):
                    s += alpha * (p - s)
                    p.copy_(s)
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q)


def test_lookahead_resume_is_exact_and_schedule_reaches_inner_lr():
    def make():
        m = _model()
        o = build_optimizer(m, "adam", 1e-2, lookahead_k=4, lookahead_alpha=0.6)
        return m, o, build_schedule(o, "cosine", total_steps=20, steps_per_epoch=5)

    def steps(m, o, s, a, b):
        for i in range(a, b):
            o.zero_grad()
            _loss(m, i).backward()
            o.step()
            s.step()

    m1, o1, s1 = make()
    steps(m1, o1, s1, 0, 14)
    assert o1.base.param_groups[0]["lr"] == o1.param_groups[0]["lr"] < 1e-2  # the schedule moved the inner lr
    m2, o2, s2 = make()
    steps(m2, o2, s2, 0, 6)  # stop between two slow updates
    state = {"m": m2.state_dict(), "o": o2.state_dict(), "s": s2.state_dict()}
    m3, o3, s3 = make()
    m3.load_state_dict(state["m"])
    o3.load_state_dict(state["o"])
    s3.load_state_dict(state["s"])
    steps(m3, o3, s3, 6, 14)
    for p, q in zip(m1.parameters(), m3.parameters()):
        torch.testing.assert_close(p, q)
    assert o3.fast_steps == 14


def test_ema_matches_the_formula():
    model = _model()
    ema = ModelEMA(model, decay=0.9, warmup=False)
    expected = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(model, "sgd", 0.1)
    for i in range(5):
        opt.zero_grad()
        _loss(model, i).backward()
        opt.step()
        ema.update(model)
        expected = [0.9 * e + 0.1 * p.detach() for e, p in zip(expected, model.parameters())]
    for e, p in zip(expected, ema.module.parameters()):
        torch.testing.assert_close(e, p)
    torch.testing.assert_close(ema.module[1].running_mean, model[1].running_mean)
    warm = ModelEMA(model, decay=0.999)
    assert math.isclose(warm.current_decay(), 0.1)
    restored = ModelEMA(_model(), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 5
