"""The LR range test on synthetic data: an exponential ramp, a plot, a sensible suggestion."""

import argparse
import json
import math

import torch
from torch import nn

from cnnlab.workflows.measure.lrfind import lr_range_test, plot_lr_find, suggest_lr


def _blobs(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 16, generator=g)  # overlapping classes: the loss cannot reach 0
    y = torch.randint(0, 4, (n,), generator=g)
    return centers[y] + torch.randn(n, 16, generator=g), y


def _batches(x, y, bs=32):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)]


def test_range_test_ramps_restores_and_suggests(tmp_path):
    torch.manual_seed(0)
    x, y = _blobs()
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    before = [p.detach().clone() for p in model.parameters()]
    r = lr_range_test(model, _batches(x, y), nn.functional.cross_entropy, "sgd", start_lr=1e-5, end_lr=100,
                      steps=150, momentum=0.0)
    # the ramp is exponential: equal ratios between consecutive rates
    ratios = [b / a for a, b in zip(r.lrs, r.lrs[1:])]
    assert max(ratios) - min(ratios) < 1e-9 and r.lrs[0] == 1e-5
    assert math.isclose(ratios[0], (100 / 1e-5) ** (1 / 149))
    # plain SGD on this problem diverges somewhere above lr 1, and the suggestion sits below that
    assert r.diverged and len(r.lrs) < 150
    assert 1e-3 < r.suggestion < r.min_loss_lr <= r.lrs[-1]
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)
    path = tmp_path / "lr.png"
    assert plot_lr_find(r, path) == path and path.read_bytes()[:4] == b"\x89PNG"
    assert plot_lr_find(r, tmp_path / "plots" / "lr") == tmp_path / "plots" / "lr.png"  # suffix added, as written


def test_smoothing_is_the_debiased_moving_average():
    x, y = _blobs(64)
    model = nn.Linear(16, 4)
    r = lr_range_test(model, _batches(x, y), nn.functional.cross_entropy, "sgd", 1e-6, 1e-5, steps=20, beta=0.9)
    avg = 0.0
    for i, (raw, smooth) in enumerate(zip(r.raw_losses, r.losses)):
        avg = 0.9 * avg + 0.1 * raw
        assert math.isclose(smooth, avg / (1 - 0.9 ** (i + 1)), rel_tol=1e-12)


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = [10 ** (-4 + i / 10) for i in range(41)]  # 1e-4 .. 1
    losses = [2.0 - 1.5 / (1 + math.exp(-(math.log10(lr) + 2) * 4)) for lr in lrs]  # steepest at 1e-2
    losses[-5:] = [0.6, 0.8, 1.2, 2.0, 3.0]
    best, low = suggest_lr(lrs, losses)
    assert 10 ** -2.2 <= best <= 10 ** -1.8
    assert low == lrs[35]


def test_lr_find_command_on_synthetic_dataset(tmp_path, capsys):
    from cnnlab.commands import lr_find

    parser = argparse.ArgumentParser()
    lr_find.add_parser(parser.add_subparsers())
    out = tmp_path / "find.png"
    args = parser.parse_args(["lr-find", "--model", "c4k3-relu-p2-fc8-relu", "--dataset",
                              "synthetic:shape=1x8x8,classes=3,train=300,test=30", "--steps", "40",
                              "--batch-size", "32", "--out", str(out), "--json"])
    assert args.func(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["suggested_lr"] > 0 and d["steps"] == len(d["lrs"]) <= 40 and d["plot"] == str(out)
    assert out.exists()
