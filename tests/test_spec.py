import pytest
import torch

from cnnlab.errors import SpecError
from cnnlab.models import create_model
from cnnlab.models.spec import parse_spec, resolve


def test_tokens_and_repetition():
    spec = parse_spec("[c32k3-relu-c32k3-relu-p2]x3-fc10")
    assert len(spec.layers) == 16 and spec.loss == "softmax"
    assert spec.layers[0].args == dict(out=32, k=3, stride=1, pad=1, groups=1)
    assert [l.kind for l in spec.layers[:5]] == ["conv", "relu", "conv", "relu", "maxpool"]


def test_nested_groups_and_loss():
    spec = parse_spec("[[c8k3-relu]x2-p2]x2-fc10-svm")
    assert [l.kind for l in spec.layers].count("conv") == 4
    assert spec.loss == "svm"


def test_resolve_shapes_lenet_like():
    layers = resolve(parse_spec("c6k5p0-relu-p2-c16k5p0-relu-p2-fc120-relu-fc84-relu-fc10"), (3, 32, 32), 10)
    shapes = [(l.kind, out) for l, _, out in layers]
    assert shapes[0] == ("conv", (6, 28, 28))
    assert ("flatten", (400,)) in shapes
    assert layers[-1][0].args == dict(out=10, **{"in": 84})


def test_final_fc_appended_and_checked():
    layers = resolve(parse_spec("c8k3-relu-gap"), (1, 28, 28), 7)
    assert layers[-1][0].kind == "fc" and layers[-1][2] == (7,)
    with pytest.raises(SpecError, match="fc10.*100 classes"):
        resolve(parse_spec("c8k3-fc10"), (3, 32, 32), 100)


@pytest.mark.parametrize("text, bad", [
    ("c32k3-relu-foo-fc10", "'foo'"),
    ("c32k3-relu-p2-fc10-softmax-relu", "softmax"),
    ("[c32k3-relu", "unbalanced"),
    ("[c32k3-relu]-fc10", "xN"),
    ("c32k3--fc10", "empty token"),
])
def test_bad_specs_name_the_token(text, bad):
    with pytest.raises(SpecError, match=bad):
        parse_spec(text)


def test_spec_that_shrinks_too_much_names_the_layer():
    with pytest.raises(SpecError, match="'p2'"):
        resolve(parse_spec("[c8k3-p2]x5-fc10"), (1, 28, 28), 10)


def test_depthwise_and_grouped_convolutions():
    model = create_model("c16k3-bn-relu-dwk3s2-c32k1-relu-gap-fc10", 10, 3, 32)
    dw = model[3]
    assert dw.groups == 16 and dw.out_channels == 16 and dw.stride == (2, 2)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_spec_model_forward_and_loss_name():
    model = create_model("c8k3-relu-p2-fc32-bn-relu-d0.5-fc10-svm", 10, 1, 28)
    assert model.loss_name == "svm"
    assert model(torch.zeros(4, 1, 28, 28)).shape == (4, 10)
