"""Where the time of one training step goes: forward and backward time of every layer.

Each repeat runs one full step layer by layer (forward through every layer, the loss,
backward through every layer, the optimizer update) and times each piece separately; the
figures are medians over the repeats, after warm-up steps (which also compile Numba kernels).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from cnnlab.scratch.losses import compute_loss
from cnnlab.scratch.model import ScratchNet
from cnnlab.scratch.optim import SGD


def profile_step(net: ScratchNet, x, y, repeats: int = 5, warmup: int = 1) -> dict:
    """Rows of (layer, forward_ms, backward_ms, total_ms, share) plus the step total."""
    x = net._check_input(x)
    opt = SGD(net.named_params(), lr=1e-4)
    n = len(net.layers)
    fwd, bwd, other = [[] for _ in range(n)], [[] for _ in range(n)], {"loss": [], "update": []}
    net.train()
    for rep in range(warmup + repeats):
        keep = rep >= warmup
        out, caches, tf = x, [], []
        for layer in net.layers:
            t = time.perf_counter()
            out, cache = layer.forward(out, True)
            tf.append(time.perf_counter() - t)
            caches.append(cache)
        t = time.perf_counter()
        _, d = compute_loss(net.loss_name, out, y)
        t_loss = time.perf_counter() - t
        grads, tb = {}, [0.0] * n
        for i in range(n - 1, -1, -1):
            t = time.perf_counter()
            d, g = net.layers[i].backward(d, caches[i])
            tb[i] = time.perf_counter() - t
            grads.update({f"{i}.{k}": v for k, v in g.items()})
        net.release(caches)  # as ScratchNet.loss does: the next step reuses the column matrices
        t = time.perf_counter()
        opt.step(grads)
        t_update = time.perf_counter() - t
        if keep:
            for i in range(n):
                fwd[i].append(tf[i])
                bwd[i].append(tb[i])
            other["loss"].append(t_loss)
            other["update"].append(t_update)
    ms = lambda v: 1000 * statistics.median(v)  # noqa: E731
    rows = [dict(index=i, layer=layer.name, forward_ms=ms(fwd[i]), backward_ms=ms(bwd[i]))
            for i, layer in enumerate(net.layers)]
    rows.append(dict(index=None, layer=f"loss ({net.loss_name})", forward_ms=ms(other["loss"]), backward_ms=0.0))
    rows.append(dict(index=None, layer="update (sgd)", forward_ms=0.0, backward_ms=ms(other["update"])))
    total = sum(r["forward_ms"] + r["backward_ms"] for r in rows)
    for r in rows:
        r["total_ms"] = r["forward_ms"] + r["backward_ms"]
        r["share"] = r["total_ms"] / total if total else 0.0
    return dict(spec=net.spec, backend=net.backend, batch_size=int(len(x)), input=list(net.in_shape),
                repeats=repeats, step_ms=total, layers=rows)


def format_profile(result) -> str:
    head = f"{'layer':<18} {'forward ms':>11} {'backward ms':>12} {'total ms':>9} {'share':>7}"
    lines = [head, "-" * len(head)]
    for r in result["layers"]:
        name = r["layer"] if r["index"] is None else f"{r['index']}: {r['layer']}"
        lines.append(f"{name:<18} {r['forward_ms']:>11.2f} {r['backward_ms']:>12.2f} {r['total_ms']:>9.2f} {100 * r['share']:>6.1f}%")
    lines.append(f"{'step':<18} {'':>11} {'':>12} {result['step_ms']:>9.2f} {'100.0%':>7}")
    return "\n".join(lines)


def plot_profile(result, path):
    """A horizontal bar chart, forward and backward stacked, one bar per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["layers"]
    names = [r["layer"] if r["index"] is None else f"{r['index']}: {r['layer']}" for r in rows]
    ypos = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1.5))
    f = [r["forward_ms"] for r in rows]
    ax.barh(ypos, f, color="#4c72b0", label="forward")
    ax.barh(ypos, [r["backward_ms"] for r in rows], left=f, color="#dd8452", label="backward")
    for y, r in zip(ypos, rows):
        ax.text(r["total_ms"], y, f" {100 * r['share']:.0f}%", va="center", fontsize=8)
    ax.set_yticks(ypos, names)
    ax.set_xlabel("milliseconds per step (median)")
    ax.set_title(f"{result['spec']}  [{result['backend']}, batch {result['batch_size']}]", fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
