"""Every layer: numerical gradient check, and PyTorch as the oracle for forward and backward."""

import numpy as np
import pytest
import torch

from cnnlab.scratch import gradcheck, layers as L
from cnnlab.scratch.losses import softmax_loss, svm_loss

THRESHOLD = 1e-7
f64 = np.float64


def _layers():
    return [
        (L.Conv2d(3, 4, 3, 1, 1, dtype=f64, name="c4k3"), (2, 3, 5, 5)),
        (L.Conv2d(4, 6, 3, 2, 0, groups=2, dtype=f64, name="c6k3s2p0g2"), (2, 4, 7, 6)),
        (L.Conv2d(3, 3, 3, 1, 1, groups=3, dtype=f64, backend="numba", name="dwk3"), (2, 3, 5, 5)),
        (L.MaxPool2d(2, 2, name="p2"), (2, 3, 6, 6)),
        (L.MaxPool2d(3, 2, backend="numba", name="p3s2"), (2, 2, 7, 7)),
        (L.AvgPool2d(2, 2, name="ap2"), (2, 3, 6, 6)),
        (L.AvgPool2d(3, 1, backend="numba", name="ap3s1"), (2, 2, 5, 5)),
        (L.GlobalAvgPool("gap"), (2, 3, 4, 4)),
        (L.Linear(6, 4, dtype=f64, name="fc4"), (3, 6)),
        (L.Flatten("flat"), (2, 2, 3, 3)),
        (L.ReLU("relu"), (3, 7)),
        (L.ReLU6("relu6"), (3, 7)),
        (L.LeakyReLU(0.1, "lrelu0.1"), (3, 7)),
        (L.Tanh("tanh"), (3, 7)),
        (L.Sigmoid("sigmoid"), (3, 7)),
        (L.Dropout(0.3, name="d0.3"), (4, 6)),
        (L.BatchNorm(3, 3, dtype=f64, name="bn"), (4, 3, 3, 3)),
        (L.BatchNorm(5, 1, dtype=f64, name="bn"), (6, 5)),
    ]


@pytest.mark.parametrize("layer,shape", _layers(), ids=lambda v: getattr(v, "name", ""))
def test_layer_gradients_pass_gradcheck(layer, shape):
    x = np.random.default_rng(42).standard_normal(shape) * 3  # relu6 sees both of its kinks' sides
    errors = gradcheck.check_layer(layer, x)
    assert errors and max(errors.values()) < THRESHOLD, errors


@pytest.mark.parametrize("loss", [softmax_loss, svm_loss])
def test_loss_gradients_pass_gradcheck(loss):
    rng = np.random.default_rng(0)
    s, y = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    _, ds = loss(s, y)
    num = gradcheck.numerical_gradient(lambda: loss(s, y)[0], s)
    assert gradcheck.rel_error(ds, num) < THRESHOLD


def _torch_module(layer):
    import torch.nn as nn

    if isinstance(layer, L.Conv2d):
        w = layer.params["weight"]
        m = nn.Conv2d(layer.in_channels, w.shape[0], layer.k, layer.stride, layer.pad, groups=layer.groups).double()
    elif isinstance(layer, L.Linear):
        m = nn.Linear(*layer.params["weight"].shape[::-1]).double()
    elif isinstance(layer, L.BatchNorm):
        m = (nn.BatchNorm2d if layer.ndim == 3 else nn.BatchNorm1d)(layer.features).double()
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.uniform_(-1, 1)
        layer.params["weight"][...] = m.weight.detach().numpy()
        layer.params["bias"][...] = m.bias.detach().numpy()
        return m
    else:
        return {L.MaxPool2d: lambda: nn.MaxPool2d(layer.k, layer.stride), L.AvgPool2d: lambda: nn.AvgPool2d(layer.k, layer.stride),
                L.GlobalAvgPool: lambda: nn.AdaptiveAvgPool2d(1), L.Flatten: nn.Flatten, L.ReLU: nn.ReLU, L.ReLU6: nn.ReLU6,
                L.LeakyReLU: lambda: nn.LeakyReLU(layer.slope), L.Tanh: nn.Tanh, L.Sigmoid: nn.Sigmoid}[type(layer)]()
    for n, p in m.named_parameters():
        p.data = torch.from_numpy(layer.params[n].copy())
    return m


@pytest.mark.parametrize("seed", range(6))
def test_layers_match_torch_on_random_shapes(seed):
    rng = np.random.default_rng(seed)
    n, c, h, w = rng.integers(1, 4), rng.integers(1, 5), rng.integers(5, 10), rng.integers(5, 10)
    k = int(rng.integers(1, 5))
    s, p = int(rng.integers(1, 4)), int(rng.integers(0, k // 2 + 1))
    g = int(rng.choice([gg for gg in (1, 2, c) if c % gg == 0]))
    f = g * int(rng.integers(1, 4))
    pk = int(rng.integers(1, 4))
    cases = [
        (L.Conv2d(c, f, k, s, p, g, dtype=f64, backend=rng.choice(["numpy", "numba"])), (n, c, h, w)),
        (L.MaxPool2d(pk, int(rng.integers(1, 4))), (n, c, h, w)),
        (L.AvgPool2d(pk, int(rng.integers(1, 4)), backend="numba"), (n, c, h, w)),
        (L.GlobalAvgPool(), (n, c, h, w)),
        (L.Linear(c * 3, f, dtype=f64), (n, c * 3)),
        (L.BatchNorm(c, 3, dtype=f64), (n + 1, c, h, w)),
        (L.BatchNorm(c, 1, dtype=f64), (n + 2, c)),
        (L.ReLU(), (n, c, h, w)), (L.ReLU6(), (n, c, h, w)), (L.LeakyReLU(0.2), (n, c, h, w)),
        (L.Tanh(), (n, c)), (L.Sigmoid(), (n, c)), (L.Flatten(), (n, c, h, w)),
    ]
    for layer, shape in cases:
        x = rng.standard_normal(shape) * 4
        x.flat[0] = 0.0  # a value right at the ReLU kink: torch and cnnlab both give it gradient 0
        m = _torch_module(layer).train()
        xt = torch.from_numpy(x).requires_grad_()
        out, cache = layer.forward(x, train=True)
        ref = m(xt)
        np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-5, atol=1e-12, err_msg=repr(layer))
        dout = rng.standard_normal(out.shape)
        ref.backward(torch.from_numpy(dout))
        dx, grads = layer.backward(dout, cache)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-12, err_msg=repr(layer))
        for name, tp in m.named_parameters():
            np.testing.assert_allclose(grads[name], tp.grad.numpy(), rtol=1e-5, atol=1e-12, err_msg=f"{layer!r} {name}")
        for name, buf in m.named_buffers():
            np.testing.assert_allclose(layer.buffers[name], buf.numpy(), rtol=1e-5, atol=1e-12)


def test_losses_match_torch():
    rng = np.random.default_rng(3)
    s, y = rng.standard_normal((7, 5)), rng.integers(0, 5, 7)
    st, yt = torch.from_numpy(s).requires_grad_(), torch.from_numpy(y)
    for ours, theirs in [
        (softmax_loss(s, y), torch.nn.functional.cross_entropy(st, yt)),
        (softmax_loss(s, y, 0.1), torch.nn.functional.cross_entropy(st, yt, label_smoothing=0.1)),
        (svm_loss(s, y), torch.nn.MultiMarginLoss(margin=1)(st, yt) * 5),  # cs231n's sum = C x torch's mean
    ]:
        st.grad = None
        theirs.backward()
        assert ours[0] == pytest.approx(theirs.item(), rel=1e-12)
        np.testing.assert_allclose(ours[1], st.grad.numpy(), rtol=1e-10, atol=1e-14)
