"""Fast kernels against the reference loops, and the two backends against each other."""

import numpy as np
import pytest

from cnnlab.scratch import kernels
from cnnlab.scratch import naive
from cnnlab.scratch.backends import get_backend

CONV_CASES = [  # n, c, h, w, f, k, stride, pad, groups
    (2, 3, 7, 6, 4, 3, 1, 1, 1),
    (2, 4, 9, 8, 6, 3, 2, 0, 2),
    (1, 4, 5, 5, 4, 3, 2, 2, 4),  # depthwise
    (2, 2, 6, 7, 3, 1, 1, 0, 1),
    (1, 3, 8, 8, 2, 5, 3, 2, 1),
]
POOL_CASES = [(2, 2), (3, 2), (2, 1), (3, 3)]


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    return get_backend(request.param)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_naive_loops(backend, case):
    n, c, h, w, f, k, s, p, g = case
    rng = np.random.default_rng(0)
    x, wt, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c // g, k, k)), rng.standard_normal(f)
    out, cache = backend.conv_forward(x, wt, b, s, p, g)
    np.testing.assert_allclose(out, naive.conv_forward(x, wt, b, s, p, g), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for got, want in zip(backend.conv_backward(dout, cache), naive.conv_backward(dout, x, wt, s, p, g)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s", POOL_CASES)
def test_pooling_matches_naive_loops(backend, k, s):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 6))
    x[0, 0, :2, :2] = 0.0  # a tie: the first maximum takes the gradient
    for fwd, bwd, ref_f, ref_b in [
        (backend.maxpool_forward, backend.maxpool_backward, naive.maxpool_forward, naive.maxpool_backward),
        (backend.avgpool_forward, backend.avgpool_backward, naive.avgpool_forward, naive.avgpool_backward),
    ]:
        out, cache = fwd(x, k, s)
        np.testing.assert_allclose(out, ref_f(x, k, s), rtol=1e-12, atol=1e-12)
        dout = rng.standard_normal(out.shape)
        np.testing.assert_allclose(bwd(dout, cache), ref_b(dout, x, k, s), rtol=1e-12, atol=1e-12)


def test_numba_equals_numpy_in_float32():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 3, 10, 10)).astype(np.float32)
    w, b = rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    a, z = get_backend("numpy"), get_backend("numba")
    oa, ca = a.conv_forward(x, w, b, 1, 1, 1)
    oz, cz = z.conv_forward(x, w, b, 1, 1, 1)
    assert oa.dtype == oz.dtype == np.float32
    np.testing.assert_array_equal(oa, oz)  # same columns, same BLAS call
    d = rng.standard_normal(oa.shape).astype(np.float32)
    for ga, gz in zip(a.conv_backward(d, ca), z.conv_backward(d, cz)):
        np.testing.assert_allclose(ga, gz, rtol=1e-5, atol=1e-5)
    pa, pz = a.maxpool_forward(x, 2, 2), z.maxpool_forward(x, 2, 2)
    np.testing.assert_array_equal(pa[0], pz[0])


def test_unknown_backend_is_a_user_error():
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match="numba, numpy"):
        get_backend("cuda")



@pytest.mark.parametrize("case", CONV_CASES)
def test_numba_im2col_and_col2im_equal_numpy_ones(case):
    from cnnlab.scratch import numba_kernels

    n, c, h, w, f, k, s, p, g = case
    x = np.random.default_rng(4).standard_normal((n, c, h, w))
    cols = kernels.im2col(x, k, s, p)
    np.testing.assert_array_equal(numba_kernels.im2col(x, k, s, p), cols)
    np.testing.assert_allclose(numba_kernels.col2im(cols, x.shape, k, s, p), kernels.col2im(cols, x.shape, k, s, p),
                               rtol=1e-12, atol=1e-12)


def test_columns_are_reused_only_after_release(backend):
    """A convolution's column matrix goes back to the workspace only when released; a cache that
    was not released keeps its own columns, so interleaved forwards and backwards stay exact."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 6))
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    _, c1 = backend.conv_forward(x, w, b, 1, 1, 1)
    _, c2 = backend.conv_forward(2 * x, w, b, 1, 1, 1)
    assert c1[1] is not c2[1]
    d = rng.standard_normal((2, 4, 6, 6))
    backend.conv_backward(d, c1)
    backend.conv_release(c1)
    _, c3 = backend.conv_forward(3 * x, w, b, 1, 1, 1)
    assert c3[1] is c1[1]  # the released columns, refilled
    for got, want in zip(backend.conv_backward(d, c2), naive.conv_backward(d, 2 * x, w, 1, 1, 1)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    for got, want in zip(backend.conv_backward(d, c3), naive.conv_backward(d, 3 * x, w, 1, 1, 1)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    backend.conv_release(c2)
    backend.conv_release(c3)


def test_training_steps_reuse_columns_and_stay_exact():
    """ScratchNet.loss releases its caches after backward: a second step with the same weights
    and batch gives bit-identical gradients from reused buffers."""
    from cnnlab.scratch.model import ScratchNet

    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((4, 3, 8, 8)).astype(np.float32), rng.integers(0, 5, 4)
    net = ScratchNet("c6k3-relu-p2-c8k3-relu-gap-fc5", 5, (3, 8, 8), np.float32, "numba", seed=0)
    loss1, g1 = net.loss(x, y)
    loss2, g2 = net.loss(x, y)
    assert loss1 == loss2
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name])
