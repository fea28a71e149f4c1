"""Transfer learning: pretrained sources and their layouts, frozen and fine-tuned training, gradual
unfreezing, input adaptation and the load report. Synthetic data and small models; the URL source
is served by a real HTTP server on the loopback interface."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading

import pytest
import torch

from cnnlab.checkpoint import load_checkpoint
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.dirs import load_run
from cnnlab.train.hooks import Hook
from cnnlab.train.loop import train
from cnnlab.train.validate import validate
from cnnlab.weights import cached_path, load_matched, match_state_dict, read_source
from tests.crash import DieAtCheckpoint, Killed

RGB = "synthetic:shape=3x16x16,classes=4,train=640,test=128,noise=0.5"
GRAY = "synthetic:shape=1x12x12,classes=4,train=640,test=128,noise=0.5"
NET = "c8k3-bn-relu-p2-c16k3-bn-relu-gap"  # batch norms, so frozen statistics can be checked


def cfg(out, **kw):
    base = dict(dataset=GRAY, model=NET, epochs=2, batch_size=32, seed=1, out=str(out), threads=1, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A cnnlab run on 3-channel 16x16 images: the source the transfer runs start from."""
    out = tmp_path_factory.mktemp("base") / "run"
    train(cfg(out, dataset=RGB, epochs=1, augment="flip"), quiet=True)
    return out


# ---- layouts: torchvision and timm names, written out here independently of cnnlab's tables ------------

def _randomised(model):
    """A model with non-trivial batch-norm statistics, in evaluation mode."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def torchvision_resnet(state, layers=(2, 2, 2, 2)):
    """cnnlab's CIFAR ResNet keys -> torchvision's (and timm's): conv1, bn1, layerS.B..., downsample, fc."""
    where = [(s + 1, b) for s, n in enumerate(layers) for b in range(n)]
    out = {}
    for k, v in state.items():
        p = k.split(".")
        if p[0] == "stem":
            out[".".join([{"0": "conv1", "1": "bn1"}[p[1]]] + p[2:])] = v
        elif p[0] == "blocks":
            s, b = where[int(p[1])]
            rest = ["downsample"] + p[3:] if p[2] == "shortcut" else p[2:]
            out[".".join([f"layer{s}", str(b)] + rest)] = v
        else:
            out[k] = v
    return out


def torchvision_mobilenet(state):
    """cnnlab's MobileNetV2 keys -> torchvision's: features.N.conv.[i.j | bare conv, its BN], classifier.1."""
    out = {}
    for k, v in state.items():
        p = k.split(".")
        if len(p) > 2 and p[2] == "block":
            n, i, j, rest = p[1], int(p[3]), p[4], p[5:]
            last = max(int(q.split(".")[3]) for q in state if q.startswith(f"features.{n}.block."))
            if i < last:
                out[".".join(["features", n, "conv", str(i), j] + rest)] = v
            else:  # the projection: a bare conv, then its BN
                out[".".join(["features", n, "conv", str(i + (j == "1"))] + rest)] = v
        else:
            out[k] = v
    return out


def timm_mobilenet(state):
    """cnnlab's MobileNetV2 keys -> timm's mobilenetv2_100: conv_stem/bn1, blocks.S.B.*, conv_head/bn2, classifier."""
    stages = [(s, b) for s, n in enumerate((1, 2, 3, 4, 3, 3, 1)) for b in range(n)]
    ir = {"0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2.0": "conv_pwl", "2.1": "bn3"}
    ds = {"0.0": "conv_dw", "0.1": "bn1", "1.0": "conv_pw", "1.1": "bn2"}
    out = {}
    for k, v in state.items():
        p = k.split(".")
        if k.startswith("features.0."):
            out[".".join([{"0": "conv_stem", "1": "bn1"}[p[2]]] + p[3:])] = v
        elif k.startswith("features.18."):
            out[".".join([{"0": "conv_head", "1": "bn2"}[p[2]]] + p[3:])] = v
        elif k.startswith("classifier.1."):
            out["classifier." + p[2]] = v
        else:
            s, b = stages[int(p[1]) - 1]
            table = ds if int(p[1]) == 1 else ir
            out[".".join(["blocks", str(s), str(b), table[f"{p[3]}.{p[4]}"]] + p[5:])] = v
    return out


def _load_into_fresh(name, path, head=()):
    source = read_source(str(path))
    fresh = create_model(name, num_classes=10, in_channels=3, input_size=32)
    report = match_state_dict(fresh, source.state, head=head, model_name=name)
    load_matched(fresh, report)
    return fresh.eval(), report


@pytest.mark.parametrize("layout, fmt", [("torchvision", "pt"), ("timm", "safetensors")])
def test_a_resnet18_in_torchvision_or_timm_layout_loads_and_gives_identical_outputs(tmp_path, layout, fmt):
    original = _randomised(create_model("resnet18", num_classes=10, in_channels=3, input_size=32))
    foreign = torchvision_resnet(original.state_dict())  # timm's ResNet keys are torchvision's
    assert "layer4.1.bn2.running_var" in foreign and "layer2.0.downsample.0.weight" in foreign
    path = tmp_path / f"resnet18.{fmt}"
    if fmt == "pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in foreign.items()}}, path)  # DDP-wrapped, in a dict
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in foreign.items()}, str(path))
    loaded, report = _load_into_fresh("resnet18", path)
    assert layout in report.layout and not report.new and not report.skipped
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))
    # as a run loads it: the head starts new, and the report says so
    _, report = _load_into_fresh("resnet18", path, head=None)
    assert report.new == {"fc.weight": "head", "fc.bias": "head"}
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    assert report.loaded_params == report.backbone_params == 11_173_962 - 5_130


@pytest.mark.parametrize("rename", [torchvision_mobilenet, timm_mobilenet], ids=["torchvision", "timm"])
def test_a_mobilenet_v2_in_torchvision_or_timm_layout_gives_identical_outputs(tmp_path, rename):
    original = _randomised(create_model("mobilenet_v2", num_classes=10, in_channels=3, input_size=32))
    foreign = rename(original.state_dict())
    assert not any(".block." in k for k in foreign)
    torch.save(foreign, tmp_path / "mnv2.pth")
    loaded, report = _load_into_fresh("mobilenet_v2", tmp_path / "mnv2.pth")
    assert not report.new and not report.skipped and len(report.loaded) == len(original.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))


def test_an_imagenet_stem_is_skipped_and_trains(tmp_path):
    """ImageNet's 7x7 stem does not fit the CIFAR 3x3 stem: reported, left new, and trained when frozen."""
    from cnnlab.train.transfer import Transfer

    foreign = torchvision_resnet(create_model("resnet18", num_classes=1000, in_channels=3, input_size=224).state_dict())
    foreign["conv1.weight"] = torch.randn(64, 3, 7, 7)
    torch.save(foreign, tmp_path / "imagenet.pth")
    model, report = _load_into_fresh("resnet18", tmp_path / "imagenet.pth", head=None)
    assert report.skipped["conv1.weight"] == "shape (64,3,7,7), the model has (64,3,3,3)"
    assert "stem.0.weight" in report.new and report.skipped["fc.weight"].startswith("the source's head")
    tr = Transfer(model, TrainConfig(model="resnet18", pretrained="x", freeze="backbone"))
    tr.mark_new(report.new)
    tr.set_epoch(0)
    assert model.stem[0].weight.requires_grad and model.stem[1].weight.requires_grad  # the conv and its BN
    assert not model.blocks[0].conv1.weight.requires_grad and model.fc.weight.requires_grad
    assert model.stem[1] not in tr.frozen_norms and model.blocks[0].bn1 in tr.frozen_norms


def test_gray_images_on_an_rgb_base_fold_the_first_conv():
    """Summing the first conv over its input channels equals feeding the gray image as three channels."""
    rgb = _randomised(create_model(NET, num_classes=4, in_channels=3, input_size=16))
    gray = create_model(NET, num_classes=4, in_channels=1, input_size=16).eval()
    report = match_state_dict(gray, rgb.state_dict(), head=())
    load_matched(gray, report)
    assert "summed over its 3 input channels" in report.adapted["0.weight"]
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(gray(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-5)


# ---- sources: run directories, checkpoints, URLs, and what is refused ------------------------------------

def test_a_run_directory_and_its_checkpoint_read_the_same(base):
    a, b = read_source(str(base)), read_source(str(base / "checkpoints" / "last.pt"))
    assert a.kind == "cnnlab run" and b.kind == "cnnlab checkpoint" and a.meta["model"] == NET
    assert a.meta["shape"] == [3, 16, 16] and set(a.state) == set(b.state)


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            hits.append(self.path)
            return super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/", hits
    httpd.shutdown()


def test_a_url_source_is_downloaded_checked_and_cached(server, tmp_path, monkeypatch):
    served, url, hits = server
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    state = create_model(NET, num_classes=4, in_channels=3, input_size=16).state_dict()
    torch.save(state, served / "net.pth")
    digest = hashlib.sha256((served / "net.pth").read_bytes()).hexdigest()
    source = read_source(f"{url}net.pth#sha256={digest}")
    assert source.url == f"{url}net.pth" and source.sha256 == digest and source.kind == "state dict"
    assert source.file == cached_path(f"{url}net.pth").resolve() and source.file.is_relative_to(tmp_path / "cache")
    assert all(torch.equal(source.state[k], state[k]) for k in state)
    read_source(f"{url}net.pth", pretrained_hash=f"sha256:{digest[:8]}")  # a prefix will do; from the cache
    assert hits == ["/net.pth"]
    # a wrong hash: refused, and nothing is kept
    (served / "other.pth").write_bytes((served / "net.pth").read_bytes())
    with pytest.raises(CnnlabError, match="not the expected 0000000000"):
        read_source(f"{url}other.pth#sha256={'0' * 64}")
    assert not cached_path(f"{url}other.pth").exists()
    assert not [p for p in (tmp_path / "cache" / "pretrained").iterdir() if p.name.startswith(".")]
    with pytest.raises(CnnlabError, match="could not download"):
        read_source(f"{url}missing.pth")


def test_a_downloaded_file_is_never_unpickled(server, tmp_path, monkeypatch):
    served, url, _ = server
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    torch.save({"weights": torch.ones(2), "extra": object.__new__(TrainConfig)}, served / "pickled.pt")
    with pytest.raises(CnnlabError, match="never unpickles a downloaded file"):
        read_source(f"{url}pickled.pt")


def _cli_error(capsys, args):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("cnnlab: error: "), err
    return err


def _train_args(out, *extra):
    return ["train", "--dataset", GRAY, "--model", NET, "--epochs", "1", "--quiet", "--device", "cpu",
            "--out", str(out), *map(str, extra)]


def test_a_foreign_or_wrong_shape_checkpoint_is_one_line_exit_2(base, tmp_path, capsys):
    mlp = create_model("mlp", num_classes=4, in_channels=1, input_size=12).state_dict()
    torch.save(mlp, tmp_path / "foreign.pt")
    err = _cli_error(capsys, _train_args(tmp_path / "a", "--pretrained", tmp_path / "foreign.pt"))
    assert f"nothing in --pretrained {tmp_path / 'foreign.pt'} fits {NET}" in err and "names" in err
    wide = create_model("c16k3-bn-relu-p2-c32k3-bn-relu-gap", num_classes=4, in_channels=1, input_size=12)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    err = _cli_error(capsys, _train_args(tmp_path / "b", "--pretrained", tmp_path / "wide.pt"))
    assert "have other shapes (e.g. 0.weight shape (16,1,3,3), the model has (8,1,3,3))" in err
    # a cnnlab run of another model names the model to use
    err = _cli_error(capsys, _train_args(tmp_path / "c", "--pretrained", base, "--model", "mlp"))
    assert f"the source is a {NET} trained on {RGB}: use --model {NET}" in err
    (tmp_path / "notes.txt").write_text("not weights")
    err = _cli_error(capsys, _train_args(tmp_path / "d", "--pretrained", tmp_path / "notes.txt"))
    assert "is not a PyTorch or safetensors file" in err
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert "holds a list, not a state dict" in _cli_error(capsys, _train_args(tmp_path / "e", "--pretrained",
                                                                                   tmp_path / "list.pt"))
    assert "does not exist" in _cli_error(capsys, _train_args(tmp_path / "f", "--pretrained", tmp_path / "nope"))
    assert "not a cnnlab run directory" in _cli_error(capsys, _train_args(tmp_path / "g", "--pretrained", tmp_path))
    zeros = "sha256:" + "0" * 64
    assert "not the expected" in _cli_error(capsys, _train_args(tmp_path / "h", "--pretrained", base,
                                                                "--pretrained-hash", zeros))
    assert not any((tmp_path / d).exists() for d in "abcdefgh")  # refused before any run directory


RULES = [
    (dict(freeze="backbone"), "--freeze backbone keeps pretrained weights fixed: add --pretrained"),
    (dict(freeze="head"), "unknown --freeze 'head'"),
    (dict(pretrained="x", unfreeze_epochs=2), "--unfreeze-epochs thaws a frozen backbone gradually: add --freeze"),
    (dict(backbone_lr_mult=0.1), "--backbone-lr-mult scales the pretrained backbone's learning rate"),
    (dict(pretrained="x", freeze="backbone", backbone_lr_mult=0.1), "has no effect on a backbone that stays frozen"),
    (dict(pretrained="x", backbone_lr_mult=0.0), "--backbone-lr-mult must be a positive factor"),
    (dict(pretrained="x", pretrained_hash="abc"), "--pretrained-hash must be sha256:HEX"),
    (dict(pretrained_hash="sha256:" + "a" * 64), "--pretrained-hash checks the --pretrained file"),
    (dict(pretrained="x", freeze="backbone", unfreeze_epochs=0), "--unfreeze-epochs must be at least 1 epoch"),
    (dict(dataset=RGB, input_channels=3), "--input-channels repeats a one-channel image; synthetic"),
    (dict(resize=0), "--resize must be a side in pixels"),
    (dict(engine="scratch", model="c4k3-relu-fc4", pretrained="x"), "the scratch engine does not support --pretrained"),
    (dict(engine="scratch", model="c4k3-relu-fc4", resize=16), "the scratch engine does not support --resize"),
]


@pytest.mark.parametrize("kw, message", RULES, ids=[m[:40] for _, m in RULES])
def test_the_options_rules(tmp_path, kw, message):
    with pytest.raises(CnnlabError, match=message.replace("(", r"\(").replace("+", r"\+")):
        validate(cfg(tmp_path / "r", **kw), new_run=False)


# ---- training: frozen, fine-tuned, gradual, resumed ----------------------------------------------------

def _state(run, which="last"):
    return load_checkpoint(run / "checkpoints" / f"{which}.pt")["model_state"]


class _HeadAtStart(Hook):
    def on_start(self, t):
        self.weight = t.engine.model[9].weight.detach().clone()


def test_frozen_training_changes_no_backbone_weight_or_statistic_and_fine_tuning_does(base, tmp_path):
    source = _state(base, "best")
    head = _HeadAtStart()
    frozen = train(cfg(tmp_path / "frozen", pretrained=str(base), freeze="backbone"), quiet=True, hooks=[head])
    after = _state(tmp_path / "frozen")
    backbone = [k for k in after if not k.startswith("9.")]
    assert any("running_mean" in k for k in backbone) and any("num_batches_tracked" in k for k in backbone)
    for k in backbone:
        want = source[k].sum(1, keepdim=True) if k == "0.weight" else source[k]  # folded for 1-channel images
        assert torch.equal(after[k], want), k
    assert not torch.equal(after["9.weight"], head.weight)  # the head trained
    assert frozen["trainable_params"] == 16 * 4 + 4 and frozen["params"] == 1364
    assert frozen["transfer"]["trainable_params_by_epoch"] == [68, 68]
    assert frozen["pretrained"]["new"] == {"9.weight": "head", "9.bias": "head"}

    tuned = train(cfg(tmp_path / "tuned", pretrained=str(base)), quiet=True)
    after = _state(tmp_path / "tuned")
    assert tuned["trainable_params"] == tuned["params"] == 1364
    for k in ("4.weight", "1.running_mean", "5.running_var", "1.weight"):
        assert not torch.equal(after[k], source[k]), k
    assert after["1.num_batches_tracked"] > source["1.num_batches_tracked"]
    log = (tmp_path / "tuned" / "train.log").read_text()
    assert "pretrained: loaded 14 tensors, 1,296 of the backbone's 1,296 parameters" in log
    assert "transfer: fine-tuning, 1,364 of 1,364 parameters train" in log
    assert frozen["seconds_per_epoch"] > 0 and tuned["seconds_per_epoch"] > 0


def test_backbone_lr_mult_scales_the_backbone_groups_through_the_schedule(base, tmp_path):
    from cnnlab.train.loop import Trainer

    t = Trainer(cfg(tmp_path / "r", pretrained=str(base), backbone_lr_mult=0.1, optimizer="sgd", lr=0.05,
                    schedule="cosine", epochs=1), quiet=True)
    t.fit()
    groups = t.engine.optimizer.param_groups
    head = {id(p) for p in t.engine.model[9].parameters()}
    for g in groups:
        scaled = g.get("lr_scale") == 0.1
        assert all((id(p) in head) != scaled for p in g["params"])
        assert g["initial_lr"] == pytest.approx(0.05 * (0.1 if scaled else 1.0))
    assert groups[0]["lr"] == pytest.approx(t.engine.lr())
    t.engine.set_base_lr(0.01)  # a resume with --lr keeps the factor
    assert sorted(g["initial_lr"] for g in groups) == pytest.approx([0.001, 0.001, 0.01, 0.01])




def test_gradual_unfreezing_follows_the_epoch_and_resumes_exactly(base, tmp_path):
    kw = dict(pretrained=str(base), freeze="backbone", unfreeze_epochs=2, epochs=3)
    whole = train(cfg(tmp_path / "whole", **kw), quiet=True)
    assert whole["transfer"]["units"] == ["0+1", "4+5"]
    assert whole["transfer"]["trainable_params_by_epoch"] == [68, 68 + 16 * 8 * 9 + 16 + 32, 1364]
    log = (tmp_path / "whole" / "train.log").read_text()
    assert "transfer: epoch 2 thaws 4+5" in log and "transfer: epoch 3 thaws 0+1" in log
    run = tmp_path / "killed"  # killed mid-epoch 2 (18 steps an epoch), after the first thaw
    with pytest.raises(Killed):
        train(cfg(run, save_every_steps=25, **kw), quiet=True, hooks=[DieAtCheckpoint(25)])
    resumed = train(None, resume=run, quiet=True)
    a, b = _state(tmp_path / "whole"), _state(run)
    assert all(torch.equal(a[k], b[k]) for k in a), "resume is not exact"
    assert resumed["test_acc"] == whole["test_acc"] and resumed["pretrained"] == whole["pretrained"]
    assert resumed["trainable_params"] == whole["trainable_params"] == 1364


def test_resume_does_not_need_the_source(base, tmp_path):
    import shutil

    copy = tmp_path / "base-copy"
    shutil.copytree(base, copy)
    run = tmp_path / "r"
    with pytest.raises(Killed):
        train(cfg(run, pretrained=str(copy), freeze="backbone", save_every_steps=5), quiet=True,
              hooks=[DieAtCheckpoint(5)])
    shutil.rmtree(copy)
    s = train(None, resume=run, quiet=True)
    assert s["pretrained"]["source"] == str(copy) and s["trainable_params"] == 68


def test_resize_and_repeated_channels_travel_with_the_run(tmp_path, capsys):
    """A base of 3x16x16 images whose fc needs 16x16 maps: 1x12x12 images fit it only resized and
    repeated; training, the saved run and `cnnlab evaluate` all adapt them the same way."""
    spec = "c8k3-bn-relu-p2-fc16-relu"
    train(cfg(tmp_path / "base", dataset=RGB, model=spec, epochs=1), quiet=True)
    as_is = match_state_dict(create_model(spec, num_classes=4, in_channels=1, input_size=12),
                             read_source(str(tmp_path / "base")).state)
    assert as_is.new["5.weight"] == "the source's (16,512) does not fit (16,288)"  # 6x6 maps, not 8x8
    s = train(cfg(tmp_path / "r", model=spec, pretrained=str(tmp_path / "base"), freeze="backbone", resize=16,
                  input_channels=3), quiet=True)
    assert s["pretrained"]["adapted"] == {} and s["pretrained"]["loaded_params"] == s["pretrained"]["backbone_params"]
    run = load_run(tmp_path / "r")
    assert run.model[0].weight.shape[1] == 3 and run.data["shape"] == [1, 12, 12]
    assert main(["evaluate", str(tmp_path / "r"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == s["test_acc"]
    # a safetensors export rebuilds the adapter from its metadata (its own check compares the scores)
    assert main(["export", str(tmp_path / "r"), "--format", "safetensors"]) == 0
    assert "bitwise equal" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "r"), "--format", "keras"]) == 2
    assert "the Keras export cannot carry" in capsys.readouterr().err


def test_a_study_names_a_missing_base_before_training_anything(tmp_path, monkeypatch):
    from pathlib import Path

    from cnnlab.workflows.study import load_study, run_study

    monkeypatch.chdir(tmp_path)  # the shipped study's base, runs/cifar-base, is not there
    study = load_study(Path(__file__).resolve().parents[1] / "examples" / "transfer_mnist.yaml", out=tmp_path / "out")
    assert [r.experiment for r in study.runs][-4:] == ["resnet20_frozen", "resnet20_frozen_lr10x", "resnet20_finetune",
                                                       "resnet20_gradual"]
    calls = []
    with pytest.raises(CnnlabError, match="experiment 'resnet20_frozen': --pretrained runs/cifar-base does not exist"):
        run_study(study, trainer=lambda config, resume=None: calls.append(config))
    assert not calls


def test_trainable_parameters_count_the_trained_model_with_a_weight_average(base, tmp_path):
    """--ema evaluates a copy without gradients; trainable parameters are still the trained model's."""
    s = train(cfg(tmp_path / "r", pretrained=str(base), freeze="backbone", ema=0.9, epochs=1), quiet=True)
    assert s["trainable_params"] == 68 and s["params"] == 1364
    plain = train(cfg(tmp_path / "p", ema=0.9, epochs=1), quiet=True)
    assert plain["trainable_params"] == plain["params"] == 1364
