"""Numerical gradient checks: centered finite differences in float64.

For a scalar function f and an entry v of an array, the numerical derivative is
    (f(v + h) - f(v - h)) / (2h),          error O(h^2) from truncation, O(eps * |f| / h) from rounding,
and with h = 1e-6 both stay far below the 1e-7 threshold for smooth functions. The check
compares it with the analytic gradient from `backward` and reports, per array, the relative error

    max |analytic - numerical| / max(max |analytic| + max |numerical|, 1e-12)

i.e. the worst entry measured against the scale of the whole gradient, so an entry that is
exactly 0 analytically does not blow up the ratio by rounding noise. A gradient that is zero
throughout (a bias just before BatchNorm) has no scale: when both gradients stay below
1e-8 the absolute difference is reported instead (rounding noise there is about 1e-10). (Kinks of ReLU and max
pooling are not smooth: an input within h of a kink gives a large error; random inputs almost
never land there.)
"""

from __future__ import annotations

import numpy as np

from cnnlab import text
from cnnlab.scratch.model import ScratchNet

ZERO = 1e-8  # gradients smaller than this everywhere count as zero


def numerical_gradient(f, x, h=1e-6, entries=None, rng=None):
    """d f() / d x by centered differences, perturbing x in place. With `entries`, only that
    many randomly chosen entries are computed; the rest are NaN."""
    grad = np.full(x.shape, np.nan) if entries is not None else np.zeros(x.shape)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    idx = np.arange(flat.size)
    if entries is not None and entries < flat.size:
        idx = (rng or np.random.default_rng(0)).choice(flat.size, entries, replace=False)
    for i in idx:
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def rel_error(analytic, numerical) -> float:
    mask = ~np.isnan(numerical)
    a, n = np.asarray(analytic, np.float64)[mask], numerical[mask]
    if a.size == 0:
        return 0.0
    scale = np.abs(a).max() + np.abs(n).max()
    diff = np.abs(a - n).max()
    return float(diff / scale if scale > ZERO else diff)


def check_layer(layer, x, train=True, seed=0, h=1e-6) -> dict:
    """Relative errors of d/dx and of every parameter gradient of one layer, for the scalar
    sum(forward(x) * r) with a fixed random r. Layers with randomness (dropout) get the
    same random stream for every evaluation."""
    x = np.array(x, dtype=np.float64)
    rng = np.random.default_rng([seed, 1])  # a stream of its own: r must not be a copy of a seed-0 input
    state = getattr(layer, "rng", None)

    def run(inp):
        if state is not None:
            layer.rng = np.random.default_rng(seed)
        return layer.forward(inp, train)

    out, cache = run(x)
    r = rng.standard_normal(out.shape)
    dx, grads = layer.backward(r, cache)

    def f():
        return float((run(x)[0] * r).sum())

    errors = {}
    if dx is not None:
        errors["input"] = rel_error(dx, numerical_gradient(f, x, h))
    for name, p in layer.params.items():
        errors[name] = rel_error(grads[name], numerical_gradient(f, p, h))
    if state is not None:
        layer.rng = state
    return errors


def check_model(net: ScratchNet, x, y, entries=None, seed=0, h=1e-6) -> list[dict]:
    """One row per parameter: name, shape, entries checked, max relative error. The model
    should be float64; it runs in its current mode, with BatchNorm statistics restored after."""
    saved = net.state_dict()
    rngs = [getattr(layer, "rng", None) for layer in net.layers]

    def loss_only():
        for layer, r in zip(net.layers, rngs):
            if r is not None:
                layer.rng = np.random.default_rng(seed)  # the same dropout masks every time
        return net.loss(x, y)

    _, grads = loss_only()
    rows = []
    rng = np.random.default_rng(seed)
    for name, p in net.named_params().items():
        num = numerical_gradient(lambda: loss_only()[0], p, h, entries, rng)
        checked = int((~np.isnan(num)).sum())
        rows.append(dict(name=name, shape=tuple(p.shape), entries=checked, rel_error=rel_error(grads[name], num)))
    net.load_state_dict(saved)
    for layer, r in zip(net.layers, rngs):
        if r is not None:
            layer.rng = r
    return rows


def format_table(rows, threshold=None) -> str:
    """The rows of `check_model` as a text table; with `threshold`, an "ok" column says whether each
    error is at most that."""
    header = ["parameter", "shape", "checked", "max rel error"] + (["ok"] if threshold else [])
    table = [[r["name"], r["shape"], r["entries"], f"{r['rel_error']:.2e}"]
             + ([("yes" if r["rel_error"] <= threshold else "NO")] if threshold else []) for r in rows]
    return text.format_table(header, table, align="llrrl")
