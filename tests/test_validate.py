"""One validation for every entry point: flags, --config, --set, study files and the Python API.

Each bad value gives one line naming the key, exit code 2, and writes nothing."""

from __future__ import annotations

import pytest

from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.train.loop import train
from cnnlab.train.validate import validate

SYN = "synthetic:shape=1x8x8,classes=3,train=120,test=30"
BASE = ["train", "--dataset", SYN, "--model", "c4k3-relu-p2-fc3", "--epochs", "1", "--quiet", "--device", "cpu"]

CASES = [  # extra CLI arguments, words the one line must contain
    (["--set", "epochs=abc"], "'epochs' in --set/--config must be int, got 'abc'"),
    (["--set", "epochs=1.5"], "'epochs' in --set/--config must be int, got 1.5"),
    (["--set", "lr=fast"], "'lr' in --set/--config must be float or null"),
    (["--set", "tta=flip"], "'tta' in --set/--config must be bool or int"),
    (["--set", "tta=3"], "--tta must be false, true (flip) or 2 (flip and 1-pixel shifts), got 3"),
    (["--set", "epoch=3"], "unknown key 'epoch' (did you mean 'epochs'?)"),
    (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--batch-size", "-4"], "--batch-size must be at least 1"),
    (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
    (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--lr", "0"], "--lr must be a positive finite number"),
    (["--momentum", "-1"], "--momentum must be in [0, 1), got -1.0"),
    (["--weight-decay", "-1"], "--weight-decay must be zero or a positive finite number"),
    (["--grad-clip", "-1"], "--grad-clip must be a positive finite gradient norm"),
    (["--grad-clip", "0"], "--grad-clip must be a positive finite gradient norm"),
    (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
    (["--ema", "1.0"], "--ema must be a decay in (0, 1)"),
    (["--subset", "0"], "--subset must be at least 1 image"),
    (["--seed", "-1"], "--seed must be a non-negative integer"),
    (["--max-seconds", "-5"], "--max-seconds must be a positive number of seconds"),
    (["--precision", "fp8"], "unknown precision 'fp8'"),
    (["--precision", "fp16", "--device", "cpu"], "fp16 training needs a CUDA device"),
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--optimizer", "adamm"], "unknown optimizer 'adamm'"),
    (["--schedule", "cosinus"], "unknown schedule 'cosinus'"),
    (["--loss", "hinge"], "unknown loss 'hinge'"),
    (["--engine", "jax"], "unknown engine 'jax'"),
    (["--dataset", "cifar-10"], "unknown dataset 'cifar-10' (did you mean 'cifar10'?)"),
    (["--model", "lenet5", "--set", "model_args={widht: 2}"], "model 'lenet5' has no option 'widht'"),
    (["--backend", "numpy"], "the torch engine does not support --backend"),
    (["--engine", "scratch", "--ema", "0.9"], "the scratch engine does not support --ema"),
    (["--engine", "scratch", "--tta"], "the scratch engine does not support --tta"),
    (["--engine", "scratch", "--precision", "bf16"], "the scratch engine does not support --precision"),
    (["--engine", "scratch", "--channels-last"], "the scratch engine does not support --channels-last"),
    (["--engine", "scratch", "--compile"], "the scratch engine does not support --compile"),
    (["--engine", "scratch", "--device", "cuda"], "the scratch engine computes on the CPU"),
    (["--engine", "scratch", "--backend", "cupy"], "unknown scratch backend 'cupy'"),
    (["--engine", "scratch", "--set", "optimizer_args={lookahead_k: 5}"], "has no option 'lookahead_k'"),
]


@pytest.mark.parametrize("extra, message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_values_are_one_line_exit_2_nothing_written(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    code = main(BASE + ["--out", str(out)] + extra) if "--device" not in extra else \
        main([a for a in BASE if a not in ("--device", "cpu")] + ["--out", str(out)] + extra)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("cnnlab: error: ")
    assert not out.exists()


def test_a_config_file_is_checked_the_same_way(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: many\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert f"'epochs' in {bad} must be int, got 'many'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_python_api_is_checked_the_same_way(tmp_path):
    with pytest.raises(CnnlabError, match="'epochs' in config must be int, got 'abc'"):
        train(TrainConfig(dataset=SYN, epochs="abc", out=str(tmp_path / "a")), quiet=True)
    with pytest.raises(CnnlabError, match="--grad-clip must be a positive finite"):
        train(TrainConfig(dataset=SYN, grad_clip=-1.0, out=str(tmp_path / "b")), quiet=True)
    with pytest.raises(CnnlabError, match="the scratch engine does not support --ema"):
        validate(TrainConfig(dataset=SYN, engine="scratch", model="c4k3-fc3", ema=0.99))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_study_file_is_checked_the_same_way(tmp_path):
    from cnnlab.workflows.study import load_study

    study = tmp_path / "s.yaml"
    study.write_text(f"base: {{dataset: '{SYN}', engine: scratch, model: c4k3-relu-fc3, epochs: 1}}\n"
                     "experiments:\n  momentum: {optimizer: momentum, momentum: 0.8}\n  ema: {ema: 0.9}\n")
    with pytest.raises(CnnlabError, match=r"line 4: experiment 'ema': the scratch engine does not support --ema"):
        load_study(study, out=tmp_path / "out")
    study.write_text(f"base: {{dataset: '{SYN}', engine: scratch, model: c4k3-relu-fc3, epochs: 1}}\n"
                     "experiments:\n  momentum: {optimizer: momentum, momentum: 0.8}\n  plain: {lr: 1}\n")
    assert len(load_study(study, out=tmp_path / "out").runs) == 2  # momentum is fine for the NumPy engine


MOMENTUM_CASES = [  # optimizer, config momentum, config nesterov -> SGD's (momentum, nesterov) in both engines
    ("sgd", 0.8, True, (0.8, True)),
    ("sgd", 0.8, False, (0.8, False)),
    ("sgd", 0.0, True, (0.0, False)),  # Nesterov needs momentum
    ("momentum", 0.0, True, (0.9, False)),  # the name says plain momentum, 0.9 where none is given
    ("nesterov", 0.7, False, (0.7, True)),
]


@pytest.mark.parametrize("opt, momentum, nesterov, want", MOMENTUM_CASES, ids=[str(c[:3]) for c in MOMENTUM_CASES])
def test_momentum_and_nesterov_mean_the_same_in_both_engines(opt, momentum, nesterov, want):
    """The same SGD settings from the same config, and the same two updates from the same weights
    and batches (the second one is where momentum and Nesterov show)."""
    import dataclasses

    import numpy as np
    import torch

    from cnnlab.scratch.engine import ScratchEngine
    from cnnlab.train.torch_engine import TorchEngine

    config = TrainConfig(dataset=SYN, model="c4k3-fc3", optimizer=opt, momentum=momentum, nesterov=nesterov, lr=0.5)
    numpy_config = dataclasses.replace(config, engine="scratch", backend="numpy")
    validate(config, new_run=False)
    validate(numpy_config, new_run=False)
    ours, theirs = TorchEngine.build(config, 3, (1, 8, 8), 4), ScratchEngine.build(numpy_config, 3, (1, 8, 8), 4)
    group = ours.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"]) == want
    assert (theirs.optimizer.hyper["momentum"], theirs.optimizer.hyper["nesterov"]) == want
    theirs.net.load_state_dict({k: v.numpy().copy() for k, v in ours.model.state_dict().items()})
    start = {k: v.clone() for k, v in ours.model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        x, y = torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)
        ours.train_step(x, y)
        theirs.train_step(x, y)
    scratch_weights = theirs.net.state_dict()
    for k, v in ours.model.state_dict().items():
        assert not torch.allclose(v, start[k])  # the updates moved every weight
        np.testing.assert_allclose(scratch_weights[k], v.numpy(), rtol=1e-4, atol=1e-6, err_msg=k)


def test_the_optimizer_table_says_which_engine_has_which_optimizer(tmp_path, capsys):
    import torch

    from cnnlab.train.optim import OPTIMIZERS, build_optimizer, default_lr, optimizer_names, register_optimizer

    assert "muon" in optimizer_names("torch") and "muon" not in optimizer_names("scratch")
    assert main(BASE + ["--engine", "scratch", "--optimizer", "muon", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "the scratch engine has no optimizer 'muon': choose one of adadelta, adagrad, adam," in err
    assert err.strip().endswith("or use --engine torch") and not (tmp_path / "r").exists()

    @register_optimizer("nadam_test", default_lr=2e-3)
    def nadam(model, lr, momentum, nesterov, weight_decay, lr_scale, args):
        return torch.optim.NAdam(model.parameters(), lr=lr, weight_decay=weight_decay, **args)

    try:  # one registered function: a name with its default rate, for the torch engine only
        assert default_lr("nadam_test") == 2e-3
        assert isinstance(build_optimizer(torch.nn.Linear(2, 2), "nadam_test"), torch.optim.NAdam)
        validate(TrainConfig(dataset=SYN, model="c4k3-fc3", optimizer="nadam_test"), new_run=False)
        with pytest.raises(CnnlabError, match="the scratch engine has no optimizer 'nadam_test'"):
            validate(TrainConfig(dataset=SYN, model="c4k3-fc3", optimizer="nadam_test", engine="scratch"),
                     new_run=False)
    finally:
        del OPTIMIZERS["nadam_test"]


def test_a_one_token_spec_is_a_spec(tmp_path, capsys):
    validate(TrainConfig(dataset=SYN, model="c16k3"))
    validate(TrainConfig(dataset=SYN, model="fc3"))
    assert main(BASE + ["--model", "c16k3x", "--out", str(tmp_path / "r")]) == 2
    assert "unknown model 'c16k3x'" in capsys.readouterr().err


def test_a_subset_larger_than_the_data_is_named(tmp_path, capsys):
    assert main(BASE + ["--subset", "5000", "--out", str(tmp_path / "r")]) == 2
    assert "--subset 5000 is larger than the" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_backend_moved_out_of_model_args_for_old_configs():
    c = TrainConfig.from_dict({"engine": "scratch", "model": "c4k3-fc3", "model_args": {"backend": "numpy"}})
    assert c.backend == "numpy" and c.model_args == {}
    validate(TrainConfig(dataset=SYN, **{k: v for k, v in c.to_dict().items() if k != "dataset"}))


def test_an_existing_out_is_refused_before_any_data_is_read(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "x").write_text("mine")
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err  # not the missing data directory
    assert (out / "x").read_text() == "mine"


def test_a_huge_repeat_is_refused_at_once(tmp_path, capsys):
    assert main(BASE + ["--model", "[c8k3-relu]x100000000", "--out", str(tmp_path / "r")]) == 2
    assert "repeats to 200,000,000 layers; a spec may have at most 10,000" in capsys.readouterr().err


def test_a_spec_too_big_for_memory_is_refused_before_it_is_built(tmp_path, capsys, monkeypatch):
    import cnnlab.train.validate as v

    monkeypatch.setattr(v, "available_memory", lambda: 8 * 2**30)
    assert main(["train", "--dataset", "synthetic", "--model", "c4096k3-c4096k3-fc100000-fc10", "--device", "cpu",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "GiB to train" in err and "8.0 GiB available" in err
    from cnnlab.models import create_model
    from cnnlab.models.spec import parse_spec, resolve, spec_size

    spec = "c6k5p0-relu-p2-c16k5g2-bn-relu-p2-dwk3-fc120-relu-fc10"
    params, _ = spec_size(resolve(parse_spec(spec), (3, 32, 32), 10))
    assert params == sum(p.numel() for p in create_model(spec, 10, 3, 32).parameters())


def test_the_loss_table_serves_both_engines_and_the_spec_grammar():
    import numpy as np
    import torch

    from cnnlab.losses import LOSSES, make_loss, register_loss
    from cnnlab.models.spec import parse_spec
    from cnnlab.scratch.losses import compute_loss

    scores, y = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([1])
    for name in ("softmax", "svm"):  # each registered once, for both engines, with the same value
        torch_loss = float(make_loss(name)(scores, y))
        assert compute_loss(name, scores.numpy().astype(np.float64), y.numpy())[0] == pytest.approx(torch_loss)

    @register_loss("squared_hinge_test", label_smoothing=False)
    def squared_hinge(s, target):
        return ((s - s.gather(1, target[:, None]) + 1).clamp_min(0) ** 2).sum(1).sub(1).mean()

    try:  # one registered function: a loss for validation, the PyTorch engine and a spec's last token
        validate(TrainConfig(dataset=SYN, model="c4k3-fc3", loss="squared_hinge_test"), new_run=False)
        assert float(make_loss("squared_hinge_test")(scores, y)) == pytest.approx(6.25)
        assert parse_spec("c4k3-fc3-squared_hinge_test").loss == "squared_hinge_test"
        with pytest.raises(CnnlabError, match="the scratch engine has no 'squared_hinge_test' loss: choose softmax"):
            compute_loss("squared_hinge_test", scores.numpy(), y.numpy())
        with pytest.raises(CnnlabError, match="label smoothing applies to the softmax loss only, not to svm"):
            compute_loss("svm", scores.numpy(), y.numpy(), label_smoothing=0.1)
    finally:
        del LOSSES["squared_hinge_test"]


def test_floats_as_ml_configs_write_them_are_floats_everywhere(tmp_path):
    """1e-3 and 5E-4 are floats in YAML 1.2 (PyYAML's YAML 1.1 reads them as strings): config files,
    --set, study and search files, and architecture files all read them as floats."""
    from cnnlab.cli import build_parser
    from cnnlab.commands.train import config_from_args
    from cnnlab.cost.accelerator import Accelerator
    from cnnlab.workflows.search.space import load_search
    from cnnlab.workflows.study import load_study

    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: '{SYN}'\nlr: 1e-3\nweight_decay: 5E-4\nmomentum: .5\nepochs: 1\n")
    c = TrainConfig.load(config)
    assert (c.lr, c.weight_decay, c.momentum, c.epochs) == (1e-3, 5e-4, 0.5, 1)
    args = build_parser().parse_args(["train", "--config", str(config), "--set", "lr=2e-3", "--set", "grad_clip=1e1"])
    c = config_from_args(args)
    assert (c.lr, c.grad_clip, c.weight_decay) == (2e-3, 10.0, 5e-4)

    study = tmp_path / "s.yaml"
    study.write_text(f"base: {{dataset: '{SYN}', model: c4k3-relu-fc3, epochs: 1, weight_decay: 5e-4}}\n"
                     "experiments:\n  small: {lr: 1e-3}\n  large: {lr: 1.5e-2}\n")
    runs = load_study(study, out=tmp_path / "out").runs
    assert sorted(r.config.lr for r in runs) == [1e-3, 1.5e-2] and runs[0].config.weight_decay == 5e-4

    search = tmp_path / "search.yaml"
    search.write_text(f"base: {{dataset: '{SYN}', epochs: 1, weight_decay: 5e-4}}\n"
                      "space:\n  spec: c{w}k3-relu-fc3\n  params: {w: {choices: [4, 8]}}\n"
                      "  train: {lr: {float: [1e-4, 1e-1], log: true}}\n")
    s = load_search(search, out=tmp_path / "search")
    assert s.base["weight_decay"] == 5e-4 and s.train["lr"]["float"] == [1e-4, 1e-1]

    arch = tmp_path / "arch.yaml"
    arch.write_text("name: tiny\npe_rows: 4\npe_cols: 4\nmac_pj: 2.2e0\nclock_mhz: 1e3\n")
    a = Accelerator.load(arch)
    assert (a.mac_pj, a.clock_mhz) == (2.2, 1000.0)


def test_a_config_that_is_not_text_or_is_empty_is_one_line(tmp_path, capsys):
    junk, empty = tmp_path / "junk.yaml", tmp_path / "empty.yaml"
    junk.write_bytes(bytes([0xFF, 0xFE, 0x00, 0x41]))
    empty.write_text("")
    for path, words in ((junk, "is not valid YAML: it is not UTF-8 text"), (empty, "is empty: give the keys")):
        assert main(BASE + ["--config", str(path), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cnnlab: error: config file {path} ") and words in err
        assert len(err.strip().splitlines()) == 1
    assert main(["study", str(junk)]) == 2
    assert "not valid YAML (it is not UTF-8 text)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
