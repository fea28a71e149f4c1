"""Each schedule against its paper's formula (and torch's own implementations where they exist)."""

import math

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.train.schedules import build_schedule, schedule_factor, schedule_names

T, E = 200, 10  # total steps, steps per epoch


def test_step_multistep_exponential():
    f = schedule_factor("step", T, E, step_epochs=5, gamma=0.5)
    assert [f(s) for s in (0, 49, 50, 99, 100, 150)] == [1, 1, 0.5, 0.5, 0.25, 0.125]
    f = schedule_factor("multistep", T, E, milestones=[3, 12], gamma=0.1)
    assert [f(s) for s in (29, 30, 119, 120)] == pytest.approx([1, 0.1, 0.1, 0.01])
    f = schedule_factor("multistep", T, E)  # default: 50% and 75% of the run
    assert [f(99), f(100), f(150)] == pytest.approx([1, 0.1, 0.01])
    f = schedule_factor("exponential", T, E, gamma=0.9)
    assert f(0) == 1 and f(30) == pytest.approx(0.9**3) and f(15) == pytest.approx(0.9**1.5)


def test_cosine_with_warmup():
    f = schedule_factor("cosine", T, E, warmup_epochs=2, min_factor=0.1)
    w = 2 * E
    assert [f(s) for s in range(w)] == pytest.approx([(s + 1) / w for s in range(w)])
    for s in (w, 70, 140, T):
        t = (s - w) / (T - w)
        assert f(s) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    assert f(T - 1) > 0.1 and f(T) == pytest.approx(0.1)


def _smith(s, size, mode, gamma=1.0):
    """Smith (2017), the paper's pseudo-code, with base_lr=0.1 and max_lr=1."""
    cycle = math.floor(1 + s / (2 * size))
    x = abs(s / size - 2 * cycle + 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**s}[mode]
    return 0.1 + 0.9 * max(0.0, 1 - x) * scale


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclical_policies_match_smith_and_torch(mode):
    f = schedule_factor(mode, T, E, step_size_epochs=2, min_factor=0.1, gamma=0.995)
    g = schedule_factor("cyclic", T, E, mode=mode, step_size_epochs=2, min_factor=0.1, gamma=0.995)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.1, max_lr=1.0, step_size_up=2 * E, mode=mode,
                                            gamma=0.995, cycle_momentum=False)
    for s in range(T):
        assert f(s) == pytest.approx(_smith(s, 2 * E, mode, 0.995)) == g(s)
        assert f(s) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    top = 0.995 ** (2 * E) if mode == "exp_range" else 1.0
    assert f(0) == pytest.approx(0.1) and f(2 * E) == pytest.approx(0.1 + 0.9 * top) and f(4 * E) == pytest.approx(0.1)


def test_onecycle_matches_torch_three_phase():
    f = schedule_factor("onecycle", T, E, pct_start=0.3, div_factor=20, final_div=50)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=T, pct_start=0.3, anneal_strategy="linear",
                                              div_factor=20, final_div_factor=50, three_phase=True,
                                              cycle_momentum=False)
    for s in range(T):
        assert f(s) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6, abs=1e-9)
        opt.step()
        ref.step()
    assert f(0) == pytest.approx(1 / 20) and f(T - 1) == pytest.approx(1 / 1000)


@pytest.mark.parametrize("name", schedule_names())
def test_every_schedule_drives_a_lambda_lr(name):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched = build_schedule(opt, name, total_steps=T, steps_per_epoch=E)
    factor = schedule_factor(name, T, E)
    for s in range(T):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * factor(s))
        assert 0 < factor(s) <= 1 + 1e-12
        opt.step()
        sched.step()


def test_bad_schedules_are_user_errors():
    with pytest.raises(CnnlabError, match="unknown schedule 'cyclical'"):
        schedule_factor("cyclical", T, E)
    with pytest.raises(CnnlabError, match="bad argument for schedule 'step'"):
        schedule_factor("step", T, E, step_size=3)
    with pytest.raises(CnnlabError, match="unknown cyclic mode"):
        schedule_factor("cyclic", T, E, mode="sine")
    with pytest.raises(CnnlabError, match="onecycle"):
        schedule_factor("onecycle", T, E, pct_start=0.6)
