"""The spec grammar's residual blocks `r[...]`: parsing, both engines (PyTorch as the oracle for the
NumPy engine's forward, backward and batch-norm statistics), the cost model's skip tensor, and
bad residual specs named by their token."""

import numpy as np
import pytest
import torch

from cnnlab.cost.report import analyze
from cnnlab.errors import SpecError
from cnnlab.models import create_model
from cnnlab.models.spec import parse_spec, resolve, spec_size
from cnnlab.scratch import gradcheck
from cnnlab.scratch.model import ScratchNet

IDENTITY = "c4k3-bn-relu-r[c4k3-bn-relu-c4k3-bn]x2-relu-gap-fc5"
PROJECTED = "c4k3-relu-r[c6k3s2-bn-relu-c6k3-bn]-relu-r[r[c6k1-relu]-c6k3]-p2-fc5"


def test_parse_and_resolve():
    spec = parse_spec("c8k3-[r[c8k3-relu-c8k3]-relu]x2-r[c16k3s2-bn]-gap")
    kinds = [layer.kind for layer in spec.layers]
    assert kinds == ["conv", "residual", "relu", "residual", "relu", "residual", "gap"]
    assert [b.token for b in spec.layers[1].args["body"]] == ["c8k3", "relu", "c8k3"]
    resolved = resolve(spec, (3, 16, 16), 10)
    block = resolved[5][0]
    assert resolved[1][0].args["shortcut"] is None  # same shape: x itself
    conv, ins, outs = block.args["shortcut"]
    assert (conv.args["in"], conv.args["out"], conv.args["k"], conv.args["stride"]) == (8, 16, 1, 2)
    assert (ins, outs) == ((8, 16, 16), (16, 8, 8)) == (resolved[5][1], resolved[5][2])
    params, largest = spec_size(resolved)
    net = create_model("c8k3-[r[c8k3-relu-c8k3]-relu]x2-r[c16k3s2-bn]-gap", in_channels=3, input_size=16)
    assert params == sum(p.numel() for p in net.parameters())
    assert largest == 2 * 8 * 16 * 16  # a block's input is still held when its body's output is made
    assert parse_spec("r[c4k3]x3").layers[2].kind == "residual"


@pytest.mark.parametrize("spec", [IDENTITY, PROJECTED])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_both_engines_build_the_same_network(spec, backend):
    net = ScratchNet(spec, 5, (3, 9, 9), np.float64, backend=backend, seed=3)
    tnet = net.to_torch()
    assert list(net.state_dict()) == list(tnet.state_dict())
    assert any(".body." in k for k in net.state_dict())
    assert any(".shortcut." in k for k in net.state_dict()) == (spec == PROJECTED)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 3, 9, 9)), rng.integers(0, 5, 6)
    loss, grads, scores = net.loss(x, y, return_scores=True)
    tscores = tnet(torch.from_numpy(x))
    np.testing.assert_allclose(scores, tscores.detach().numpy(), rtol=1e-9, atol=1e-12)
    tloss = torch.nn.functional.cross_entropy(tscores, torch.from_numpy(y))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-10)
    assert list(grads) == [n for n, _ in tnet.named_parameters()]
    for name, p in tnet.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-6, atol=1e-10, err_msg=name)
    for name, v in tnet.state_dict().items():  # batch norm inside a block moved its statistics the same way
        np.testing.assert_allclose(net.state_dict()[name], v.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_residual_blocks_pass_the_gradient_check():
    net = ScratchNet(PROJECTED, 5, (3, 8, 8), np.float64, seed=1)
    rng = np.random.default_rng(1)
    rows = gradcheck.check_model(net, rng.standard_normal((3, 3, 8, 8)), rng.integers(0, 5, 3))
    assert any("shortcut" in r["name"] for r in rows)
    assert max(r["rel_error"] for r in rows) < 1e-7, gradcheck.format_table(rows)


def test_weights_move_between_engines_and_train_in_the_scratch_engine(tmp_path):
    from cnnlab.config import TrainConfig
    from cnnlab.train.loop import train

    s = train(TrainConfig(engine="scratch", model=PROJECTED, dataset="synthetic:shape=3x8x8,classes=5,train=120,test=20",
                          epochs=2, batch_size=20, optimizer="sgd", lr=0.05, val_size=20, out=str(tmp_path / "r")),
              quiet=True)
    assert s["epochs_run"] == 2
    from cnnlab.dirs import load_run

    run = load_run(tmp_path / "r")
    assert any(".shortcut." in k for k in run.model.state_dict())


def test_cost_model_counts_the_skip_tensor():
    plain = analyze(create_model("c8k3-c8k3-c8k3-gap-fc10", in_channels=3, input_size=16), (3, 16, 16))
    res = analyze(create_model("c8k3-r[c8k3-c8k3]-gap-fc10", in_channels=3, input_size=16), (3, 16, 16))
    assert res.totals["cycles"] == plain.totals["cycles"] and res.totals["macs"] == plain.totals["macs"]
    skip = 8 * 16 * 16 * 4  # the block input, held until the addition
    assert res.peak_activation == plain.peak_activation + skip


@pytest.mark.parametrize("spec, token", [
    ("c8k3-r[c8k3-fc10]", "fc10"),
    ("c8k3-r[c8k3-gap]", "gap"),
    ("c8k3-r[]", "r[]"),
    ("c8k3-r[c8k3-foo]", "foo"),
    ("c8k3-r[c8k3p0]", "r[c8k3p0]"),
    ("c8k3-fc10-r[c8k3]", "r[c8k3]"),
    ("c8k3-r[c8k3]x0", "r[c8k3]x0"),
])
def test_a_bad_residual_spec_names_its_token(spec, token):
    with pytest.raises(SpecError) as e:
        create_model(spec, in_channels=3, input_size=16)
    assert f"'{token}'" in str(e.value)
