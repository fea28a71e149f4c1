"""Fast training: FastNet's whitening layer, Muon, the linear schedule, translate and alternating
flips, TTA level 2, the data-init and time-to-accuracy hooks, compile time apart, and the recipes.
The CUDA code paths (torch augmentation ops instead of the fused CPU kernel, the compile warm-up)
run here on the CPU; their GPU timings are in BENCHMARKS.md or owed there."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.cli import main as cli
from cnnlab.config import TrainConfig
from cnnlab.data.augment import parse_augment, reflect_index
from cnnlab.data.loader import BatchLoader
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import flip_tta, tta_logits
from cnnlab.models import create_model
from cnnlab.models.zoo.fastnet import PatchWhitening
from cnnlab.recipes import describe, load_recipe, recipe_names
from cnnlab.train.hooks import ACCURACY_TARGETS
from cnnlab.train.loop import train
from cnnlab.train.muon import Muon, muon_groups, newton_schulz
from cnnlab.train.optim import build_optimizer
from cnnlab.train.schedules import schedule_factor
from cnnlab.train.validate import validate

SYNTH = "synthetic:shape=3x16x16,classes=4,train=240,test=40,noise=0.5"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """(tests/conftest.py)"""


# ---- the model ------------------------------------------------------------------------------

def test_patch_whitening_whitens_the_training_patches():
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.0, 0.5, 0.4], [0.0, 0.0, 0.3]])
    base = torch.randn(200, 3, 12, 12, generator=g)
    images = torch.einsum("ij,njhw->nihw", mix, F.avg_pool2d(base, 3, 1, 1))  # correlated in space and colour
    layer = PatchWhitening(3, 2, eps=0.0)
    layer.init_from_data(images)
    with torch.no_grad():
        out = F.conv2d(images, layer.weight[:12])  # the 12 filters; the other 12 are their negatives
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = flat.T @ flat / len(flat)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert torch.equal(layer.weight[12:], -layer.weight[:12])
    assert not layer.weight.requires_grad and layer.bias.requires_grad


def test_fastnet_layout():
    m = create_model("fastnet")
    assert sum(p.numel() for p in m.parameters()) == 1_972_792
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert "whiten.weight" in frozen and all(n.endswith("weight") for n in frozen)  # the whitening and BN scales
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    wide = create_model("fastnet", widths=[8, 16, 16], depth=3, num_classes=5, in_channels=1, input_size=28)
    assert wide(torch.randn(2, 1, 28, 28)).shape == (2, 5)


# ---- Muon and the schedule ------------------------------------------------------------------

def test_newton_schulz_orthogonalises():
    g = torch.randn(32, 72, generator=torch.Generator().manual_seed(1))
    s = torch.linalg.svdvals(newton_schulz(g).float())
    assert s.min() > 0.3 and s.max() < 1.5  # near 1: the quintic's band, not exactly 1 (Jordan et al., 2024)
    u, _, v = torch.linalg.svd(g, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(newton_schulz(g).float().flatten(), (u @ v).flatten(), dim=0) > 0.9
    assert newton_schulz(g.T).shape == (72, 32)


def test_muon_step_follows_its_formula():
    torch.manual_seed(0)
    conv, head = nn.Conv2d(3, 8, 3, bias=False), nn.Linear(8, 4, bias=True)
    model = nn.ModuleDict({"conv": conv, "head": head})
    groups = muon_groups(model, 0.1, weight_decay=0.01, head_lr=0.5, bias_lr=0.2, sgd_momentum=0.8)
    assert [g["orthogonal"] for g in groups] == [True, False, False]
    assert [g["lr"] for g in groups] == [0.1, 0.5, 0.2]
    opt = Muon(groups, lr=0.1, momentum=0.6)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    w0, hw0 = conv.weight.detach().clone(), head.weight.detach().clone()
    gw, gh = torch.randn_like(w0), torch.randn_like(hw0)
    conv.weight.grad, head.weight.grad = gw.clone(), gh.clone()
    opt.step()
    u = gw + 0.6 * gw  # Nesterov on a fresh buffer: g + momentum * (momentum * 0 + g)
    expect = w0 * (8 ** 0.5 / w0.norm()) - 0.1 * newton_schulz(u.reshape(8, -1)).view_as(w0)
    torch.testing.assert_close(conv.weight.detach(), expect)
    dh = gh + 0.01 / 0.5 * hw0  # the decay enters the gradient, scaled to the group's rate
    expect_head = hw0 - 0.5 * (dh + 0.8 * dh)
    torch.testing.assert_close(head.weight.detach(), expect_head)


def test_muon_in_the_optimizer_table_trains_a_convnet_and_checks_its_args():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    opt = build_optimizer(model, "muon", 0.05, momentum=0.6, head_lr=0.1, bias_lr=0.05)
    assert opt.param_groups[0]["orthogonal"] and opt.param_groups[0]["lr"] == 0.05
    y = torch.randint(0, 3, (64,))
    x = torch.randn(64, 3, 8, 8) + torch.randn(3, 3, 1, 1)[y]  # a colour per class
    first = F.cross_entropy(model(x), y).item()
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < 0.7 * first
    with pytest.raises(CnnlabError, match="bad optimizer_args for 'muon'"):
        build_optimizer(model, "muon", head_rate=1.0)


def test_muon_takes_momentum_and_nesterov_explicitly(tmp_path, capsys):
    """`momentum` is the filters' momentum, optimizer_args sgd_momentum the head's and biases'; every
    group is Nesterov unless optimizer_args says nesterov: false. A second value for one setting is
    one error line, before any run starts, never a silent choice."""
    model = nn.ModuleDict({"conv": nn.Conv2d(3, 8, 3, bias=False), "head": nn.Linear(8, 4)})
    opt = build_optimizer(model, "muon", 0.1, momentum=0.6, optimizer_args={"sgd_momentum": 0.8})
    assert [(g["orthogonal"], g["momentum"], g["nesterov"]) for g in opt.param_groups] == \
        [(True, 0.6, True), (False, 0.8, True), (False, 0.8, True)]
    plain = build_optimizer(model, "muon", 0.1, optimizer_args={"nesterov": False})
    assert [g["nesterov"] for g in plain.param_groups] == [False, False, False]
    with pytest.raises(CnnlabError, match=r"muon takes its filters' momentum from --momentum .* sgd_momentum"):
        build_optimizer(model, "muon", optimizer_args={"momentum": 0.9})
    with pytest.raises(CnnlabError, match="--nesterov asks muon for Nesterov momentum .*: drop one"):
        build_optimizer(model, "muon", nesterov=True, optimizer_args={"nesterov": False})
    with pytest.raises(CnnlabError, match="no option 'betas' .*are head_lr, bias_lr, sgd_momentum, nesterov"):
        build_optimizer(model, "muon", optimizer_args={"betas": [0.9, 0.99]})
    out = tmp_path / "r"
    assert cli(["train", "--dataset", SYNTH, "--model", "c8k3-bn-relu-gap-fc4", "--optimizer", "muon", "--quiet",
                "--set", "optimizer_args={momentum: 0.9}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "sgd_momentum" in err and not out.exists()


def test_linear_schedule():
    f = schedule_factor("linear", 100, 10)
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5) and f(99) == pytest.approx(0.01) and f(100) == 0.0
    assert schedule_factor("linear", 10, 5, end_factor=0.2)(10) == pytest.approx(0.2)


# ---- augmentation and TTA -------------------------------------------------------------------

class _Split:
    def __init__(self, n=48, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 256, (n, 3, 10, 10), dtype=torch.uint8, generator=g)
        self.y = torch.randint(0, 4, (n,), generator=g)


def test_translate_mirrors_the_border():
    assert reflect_index(5, 2).tolist() == [2, 1, 0, 1, 2, 3, 4, 3, 2]
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    ref = F.pad(x, (2, 2, 2, 2), mode="reflect")
    (name, fn, pad), = parse_augment("translate")
    assert pad == 2
    out = fn(x, torch.Generator().manual_seed(3), pad)
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (2,), generator=g), torch.randint(0, 5, (2,), generator=g)
    for i in range(2):
        assert torch.equal(out[i], ref[i, :, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6])
    with pytest.raises(CnnlabError, match="translate:6"):
        fn(x, torch.Generator(), 6)


@pytest.mark.parametrize("augment", ["translate:2+altflip", "translate:3+altflip+cutout:4", "crop:2+altflip",
                                     "translate:1+flip"])
def test_the_fused_cpu_kernel_equals_the_torch_ops_used_on_gpus(augment):
    loader = BatchLoader(_Split(), 16, [0.5] * 3, [0.25] * 3, shuffle=True, seed=5, augment=augment)
    assert loader.fused
    for epoch in (0, 1, 2):
        fused = [x for x, _ in loader.epoch(epoch)]
        loader.fused = False  # the path a CUDA loader takes
        ops = [x for x, _ in loader.epoch(epoch)]
        loader.fused = True
        for a, b in zip(fused, ops):
            assert torch.equal(a, b)


def test_alternating_flip_alternates_per_image():
    split = _Split(64)
    loader = BatchLoader(split, 64, [0.5] * 3, [0.25] * 3, seed=2, augment="altflip")
    idx = torch.arange(64)
    even, odd, again = loader.batch(idx, 0)[0], loader.batch(idx, 1)[0], loader.batch(idx, 2)[0]
    plain = loader.normalize(split.x)
    assert torch.equal(even, again) and torch.equal(odd.flip(3), even)
    flipped = (even != plain).flatten(1).any(1)
    assert 16 < int(flipped.sum()) < 48  # about half of the images start flipped
    other = BatchLoader(split, 64, [0.5] * 3, [0.25] * 3, seed=3, augment="altflip").batch(idx, 0)[0]
    assert not torch.equal(other, even)


def test_tta_levels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(5))
    x = torch.randn(3, 3, 8, 8)
    net(x)
    assert torch.equal(tta_logits(net, x, 0), net(x))
    assert torch.equal(tta_logits(net, x, True), flip_tta(net, x))
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = (flip_tta(net, padded[..., :8, :8]) + flip_tta(net, padded[..., 2:, 2:])) / 2
    torch.testing.assert_close(tta_logits(net, x, 2), (flip_tta(net, x) + shifted) / 2)
    with pytest.raises(CnnlabError, match="tta must be"):
        validate(TrainConfig(dataset=SYNTH, tta=3, out=None))


# ---- hooks: data init, time to accuracy, compile time apart ---------------------------------------

def _config(tmp_path, **kw):
    base = dict(model="fastnet", model_args={"widths": [8, 16, 16]}, dataset=SYNTH, epochs=4, batch_size=40,
                optimizer="muon", lr=0.2, momentum=0.6, optimizer_args={"head_lr": 20.0, "bias_lr": 2.0},
                schedule="linear", augment="translate:2+altflip", tta=2, label_smoothing=0.2, val_size=40,
                out=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_a_run_fits_its_whitening_layer_and_records_time_to_accuracy(tmp_path):
    summary = train(_config(tmp_path), quiet=True)
    run = tmp_path / "run"
    log = (run / "train.log").read_text()
    assert "fitted 1 layer(s) to the first 200 training images (PatchWhitening)" in log
    tta = summary["time_to_accuracy"]
    assert tta and summary["epochs_to_accuracy"].keys() == tta.keys()
    assert list(tta.values()) == sorted(tta.values())  # a higher target is never reached sooner
    metrics = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    best = max(float(m[4]) for m in metrics)
    reached = [float(k) for k in tta]
    assert max(reached) <= 100 * best < min([a for a in ACCURACY_TARGETS if a not in reached] or [101])
    for k, epoch in summary["epochs_to_accuracy"].items():  # at the end of the first epoch that passed it
        assert 100 * float(metrics[epoch - 1][4]) >= float(k)
        assert all(100 * float(m[4]) < float(k) for m in metrics[:epoch - 1])
        assert math.isclose(tta[k], sum(float(m[6]) for m in metrics[:epoch]), rel_tol=0.05, abs_tol=0.5)
    assert f"validation accuracy passed {next(iter(tta))}%" in log
    assert json.loads((run / "summary.json").read_text())["time_to_accuracy"] == tta


def test_resume_keeps_the_fitted_layer_and_the_recorded_times(tmp_path):
    from tests.crash import DieAtCheckpoint, Killed, last_weights

    full = train(_config(tmp_path, out=str(tmp_path / "full")), quiet=True)
    with pytest.raises(Killed):  # mid-epoch 2 (5 steps an epoch), after epoch 1 crossed its first targets
        train(_config(tmp_path, out=str(tmp_path / "cut"), save_every_steps=7), quiet=True,
              hooks=[DieAtCheckpoint(7)])
    resumed = train(None, resume=tmp_path / "cut", quiet=True)
    for a, b in zip(last_weights(tmp_path / "full").values(), last_weights(tmp_path / "cut").values()):
        assert torch.equal(a, b)
    assert resumed["epochs_to_accuracy"] == full["epochs_to_accuracy"]
    assert resumed["test_acc"] == full["test_acc"]


def test_compile_warm_up_leaves_the_model_as_it_was():
    from cnnlab.train.torch_engine import TorchEngine

    config = TrainConfig(model="c4k3-bn-relu-fc3", dataset=SYNTH, optimizer="sgd", lr=0.1)
    engine = TorchEngine(config, 3, (3, 8, 8), steps_per_epoch=4)
    calls = []
    engine.forward = lambda x: (calls.append(len(x)), engine.model(x))[1]  # a stand-in for the compiled module
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    seconds = engine.compile_warm_up(torch.randn(6, 3, 8, 8), torch.randint(0, 3, (6,)))
    assert calls == [6] and seconds > 0
    after = engine.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert all(p.grad is None for p in engine.model.parameters()) and not engine.optimizer.state


# ---- recipes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_is_a_valid_config_and_describes_itself(name):
    config = TrainConfig.from_dict(load_recipe(name))
    validate(config, new_run=False)
    d = describe(name)
    assert len(d["about"]) > 40 and d["config"]["model"] == config.model


def test_recipes_command_and_train_recipe_flag(tmp_path, capsys):
    assert set(recipe_names()) >= {"fast", "fast-cpu", "fast96"}
    assert cli(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(f"{n}: fastnet on cifar10" in out for n in ("fast", "fast-cpu", "fast96"))
    assert cli(["recipes", "fast", "--show"]) == 0
    (tmp_path / "my.yaml").write_text(capsys.readouterr().out)
    assert TrainConfig.load(tmp_path / "my.yaml").to_dict() == TrainConfig.from_dict(load_recipe("fast")).to_dict()
    assert cli(["recipes", "fastt"]) == 2
    assert "unknown recipe 'fastt' (did you mean fast" in capsys.readouterr().err
    assert cli(["train", "--recipe", "fast", "--config", str(tmp_path / "my.yaml")]) == 2
    assert "not both" in capsys.readouterr().err
    out = tmp_path / "r"
    assert cli(["train", "--recipe", "fast", "--dataset", SYNTH, "--epochs", "1", "--batch-size", "40",
                "--set", "model_args={widths: [8, 8, 8]}", "--set", "val_size=40", "--out", str(out),
                "--set", "optimizer_args={head_lr: 20.0, bias_lr: 2.0}",
                "--quiet", "--threads", "1"]) == 0
    saved = TrainConfig.load(out / "config.yaml")
    assert saved.optimizer == "muon" and saved.tta == 2 and saved.epochs == 1 and saved.dataset == SYNTH


@pytest.mark.realdata
def test_fast_recipe_trains_on_a_real_cifar10_subset(real_dataset, data_dir, tmp_path):
    """The `fast` recipe as it is (batch 2000 and all), on 4000 real CIFAR-10 images for 8 steps: it
    trains (the loss falls, accuracy beats chance) and the time-to-accuracy fields are written."""
    real_dataset("cifar10")
    config = TrainConfig.from_dict({**load_recipe("fast"), "data_dir": data_dir, "subset": 4000, "epochs": 4,
                                    "val_size": 1000, "out": str(tmp_path / "run")})
    s = train(config, quiet=True)
    losses = [float(line.split(",")[2]) for line in (tmp_path / "run" / "iterations.csv").read_text().splitlines()[1:]]
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])
    assert s["test_acc"] > 0.2 and s["best_val_acc"] > 0.2
    assert isinstance(s["time_to_accuracy"], dict) and isinstance(s["epochs_to_accuracy"], dict)
    passed = [f"{a:g}" for a in ACCURACY_TARGETS if a <= 100 * s["best_val_acc"]]  # the best epoch's targets
    assert list(s["time_to_accuracy"]) == passed and list(s["epochs_to_accuracy"]) == passed
    times, epochs = list(s["time_to_accuracy"].values()), list(s["epochs_to_accuracy"].values())
    assert times == sorted(times) and all(t > 0 for t in times)  # a higher target is never reached sooner
    assert epochs == sorted(epochs) and all(1 <= e <= s["best_epoch"] for e in epochs)
    assert s["train_count"] == 4000 and s["compile_seconds"] == 0.0
