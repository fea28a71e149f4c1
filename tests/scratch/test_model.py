"""Whole models: gradient check, PyTorch SpecNet as the oracle, conversions, errors, the engine."""

import numpy as np
import pytest
import torch

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.models.spec import Layer
from cnnlab.scratch import gradcheck
from cnnlab.scratch.engine import ScratchEngine

build = ScratchEngine.build
from cnnlab.scratch.model import ScratchNet, make_layer

MODELS = [
    "c3k3-bn-relu-p2-c4k3s2p1g1-lrelu-ap2-fc6-bn-tanh-d0.3-fc5",
    "dwk3-relu6-c4k1-mp3s2-c4k3g2-sigmoid-gap-fc5-svm",
]


def _batch(shape, n=4, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)), rng.integers(0, classes, n)


@pytest.mark.parametrize("spec", MODELS)
def test_full_models_pass_gradcheck(spec):
    net = ScratchNet(spec, 5, (2, 8, 8), np.float64, seed=1)
    x, y = _batch((2, 8, 8))
    rows = gradcheck.check_model(net, x, y)
    assert len(rows) == len(net.named_params())
    assert max(r["rel_error"] for r in rows) < 1e-7, gradcheck.format_table(rows)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spec", MODELS + ["c4k5s2p1-relu-p2-flat-fc7-relu-fc5"])
def test_model_matches_torch_specnet(spec, seed):
    net = ScratchNet(spec, 5, (2, 9, 9), np.float64, backend=["numpy", "numba"][seed % 2], seed=seed)
    tnet = net.to_torch()
    x, y = _batch((2, 9, 9), n=6, seed=seed)
    if "d0.3" in spec:  # dropout masks cannot match torch's RNG: compare in eval mode
        net.eval(), tnet.eval()
    loss, grads = net.loss(x, y)
    scores = tnet(torch.from_numpy(x))
    yt = torch.from_numpy(y)
    tloss = torch.nn.MultiMarginLoss()(scores, yt) * 5 if net.loss_name == "svm" else torch.nn.functional.cross_entropy(scores, yt)
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-10)
    assert list(grads) == [n for n, _ in tnet.named_parameters()]
    for name, p in tnet.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-5, atol=1e-10, err_msg=name)
    for name, v in tnet.state_dict().items():  # BN running statistics moved the same way
        np.testing.assert_allclose(net.state_dict()[name], v.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_from_torch_and_back_keep_weights():
    from cnnlab.models.classic import SpecNet

    torch.manual_seed(0)
    tnet = SpecNet(MODELS[0], 5, 2, 8)
    net = ScratchNet.from_torch(tnet, (2, 8, 8))
    assert net.dtype == np.float32 and set(net.state_dict()) == set(tnet.state_dict())
    x = torch.randn(3, 2, 8, 8)
    np.testing.assert_allclose(net.eval().scores(x.numpy()), tnet.eval()(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    back = net.to_torch()
    for k, v in tnet.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_bad_inputs_name_the_layer():
    net = ScratchNet("c8k3-relu-p2-fc10", 10, (3, 8, 8))
    with pytest.raises(CnnlabError, match=r"layer 0 'c8k3'.*\(N, 3, 8, 8\).*\(2, 1, 8, 8\)"):
        net.scores(np.zeros((2, 1, 8, 8)))
    with pytest.raises(CnnlabError, match="labels must lie in 0..9"):
        net.loss(np.zeros((2, 3, 8, 8)), [0, 10])
    with pytest.raises(CnnlabError, match="'foo'"):
        ScratchNet("c8k3-foo-fc10", 10, (3, 8, 8))
    with pytest.raises(CnnlabError, match="layer 'c8k9p0'"):
        ScratchNet("c8k9p0-fc10", 10, (3, 8, 8))
    with pytest.raises(CnnlabError, match=r"layer 'attn4' \(attention\) is not supported by the scratch engine"):
        make_layer(Layer("attention", {}, "attn4"), np.random.default_rng(0), np.float32, "numpy")
    fc = net.layers[-1]
    with pytest.raises(CnnlabError, match=r"layer 'fc10' expects a 2-D input with 128 features"):
        fc.forward(np.zeros((2, 7)))
    with pytest.raises(CnnlabError, match=r"layer 'c8k3' expects a 4-D input with 3 channels"):
        net.layers[0].forward(np.zeros((2, 4, 8, 8), np.float32))


def test_engine_steps_saves_and_resumes():
    cfg = TrainConfig(engine="scratch", model="c4k3-bn-relu-p2-fc10", optimizer="sgd", lr=0.1, schedule="step",
                      schedule_args={"step_epochs": 1, "gamma": 0.5}, epochs=2, weight_decay=1e-3,
                      backend="numpy")
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 10, (8,))
    a = build(cfg, 10, (3, 6, 6), steps_per_epoch=2)
    losses = [a.train_step(x, y)[0] for _ in range(2)]
    assert a.lr() == pytest.approx(0.05)  # the step schedule halved it after one epoch (2 steps)
    state = a.state_dict()
    b = build(cfg, 10, (3, 6, 6), steps_per_epoch=2)
    b.load_state_dict(state)
    la, ca = a.train_step(x, y)
    lb, cb = b.train_step(x, y)
    assert (la, ca) == (lb, cb) and la < losses[0]
    logits = a.eval_logits(x)
    assert logits.shape == (8, 10) and logits.dtype == torch.float32
    tm = a.torch_model()
    torch.testing.assert_close(tm(x), logits, rtol=1e-4, atol=1e-4)
    assert not tm.training


def test_engine_rejects_models_without_a_spec():
    with pytest.raises(CnnlabError, match="not built from a spec"):
        build(TrainConfig(engine="scratch", model="lenet5"), 10, (3, 32, 32), 1)


def test_gradcheck_command(capsys):
    from cnnlab.cli import main

    assert main(["gradcheck", "--model", "c2k3-bn-relu-p2-fc4", "--input", "2x4x4", "--classes", "4"]) == 0
    assert "pass" in capsys.readouterr().out
    # a threshold no finite difference can meet fails with exit code 1
    assert main(["gradcheck", "--model", "c2k3-relu-fc4", "--input", "1x3x3", "--classes", "4",
                 "--threshold", "1e-30", "--json"]) == 1
    assert '"passed": false' in capsys.readouterr().out
    assert main(["gradcheck", "--model", "c2k3-relu-fc4", "--input", "3by3"]) == 2


def test_profile_command(tmp_path, capsys):
    from cnnlab.cli import main

    assert main(["profile", "--model", "c4k3-relu-p2-fc10", "--batch-size", "4", "--input", "3x8x8",
                 "--repeats", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0: c4k3" in out and "update (sgd)" in out
    assert (tmp_path / "profile.png").stat().st_size > 1000
