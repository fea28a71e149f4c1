"""A network built from a spec string, in NumPy: the same layers, names and numbers as
`cnnlab.models.classic.SpecNet`, so weights move both ways with `to_torch` / `from_torch`.

    net = ScratchNet("c32k3-relu-p2-fc10", num_classes=10, in_shape=(3, 32, 32))
    loss, grads = net.loss(x, y)          # grads: {"0.weight": ..., "0.bias": ..., "3.weight": ...}
    scores = net.scores(x)                # (N, num_classes)

Parameters and buffers are named like the PyTorch state_dict: `<index>.<name>`, where the
index counts the layers of the resolved spec (including the flatten the spec implies before
the first fc). Computation runs in `dtype` (float32 for training, float64 for gradient checks).
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.models.spec import parse_spec, resolve
from cnnlab.scratch import layers as L
from cnnlab.scratch.losses import compute_loss


def make_layer(layer, rng, dtype, backend):
    """One resolved spec layer (`cnnlab.models.spec.Layer`) as a scratch layer."""
    a, kind, name = layer.args, layer.kind, layer.token
    if kind == "residual":
        body = [make_layer(item[0], rng, dtype, backend) for item in a["body"]]
        shortcut = make_layer(a["shortcut"][0], rng, dtype, backend) if a["shortcut"] else None
        return L.Residual(body, shortcut, name)
    if kind == "conv":
        return L.Conv2d(a["in"], a["out"], a["k"], a["stride"], a["pad"], a["groups"], rng, dtype, backend, name)
    if kind == "maxpool":
        return L.MaxPool2d(a["k"], a["stride"], backend, name)
    if kind == "avgpool":
        return L.AvgPool2d(a["k"], a["stride"], backend, name)
    if kind == "gap":
        return L.GlobalAvgPool(name)
    if kind == "bn":
        return L.BatchNorm(a["features"], a.get("ndim", 3), dtype=dtype, name=name)
    if kind == "fc":
        return L.Linear(a["in"], a["out"], rng, dtype, name)
    if kind == "flatten":
        return L.Flatten(name)
    if kind == "dropout":
        return L.Dropout(a["p"], np.random.default_rng(rng.integers(2**63)), name)
    if kind == "lrelu":
        return L.LeakyReLU(a["slope"], name)
    simple = {"relu": L.ReLU, "relu6": L.ReLU6, "tanh": L.Tanh, "sigmoid": L.Sigmoid}
    if kind in simple:
        return simple[kind](name)
    raise CnnlabError(f"layer '{name}' ({kind}) is not supported by the scratch engine: use --engine torch for it")


class ScratchNet:
    def __init__(self, spec: str, num_classes: int = 10, in_shape=(3, 32, 32), dtype=np.float32,
                 backend: str = "numpy", seed: int = 0, loss: str | None = None, label_smoothing: float = 0.0):
        parsed = parse_spec(spec)
        self.spec, self.num_classes, self.in_shape = parsed.text, num_classes, tuple(int(v) for v in in_shape)
        self.dtype, self.backend = np.dtype(dtype), backend
        self.loss_name, self.label_smoothing = loss or parsed.loss, label_smoothing
        self.resolved = resolve(parsed, self.in_shape, num_classes)
        rng = np.random.default_rng(seed)
        self.layers = [make_layer(layer, rng, self.dtype, backend) for layer, _, _ in self.resolved]
        if isinstance(self.layers[0], L.Conv2d):
            self.layers[0].need_dx = False  # the image needs no gradient
        self.training = True

    # ---------------------------------------------------------------- mode and state
    def train(self, mode: bool = True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def named_params(self) -> dict:
        """`{"0.weight": array, ...}`: the live arrays, in layer order (an optimizer updates them in place)."""
        return {f"{i}.{n}": p for i, layer in enumerate(self.layers) for n, p in layer.params.items()}

    def state_dict(self) -> dict:
        """Copies of parameters and buffers under the PyTorch SpecNet state_dict keys, in its order."""
        out = {}
        for i, layer in enumerate(self.layers):
            for n, v in layer.state_items().items():
                out[f"{i}.{n}"] = np.array(v, copy=True)
        return out

    def load_state_dict(self, state: dict):
        mine = self.state_dict()
        missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
        if missing or unexpected:
            raise CnnlabError(f"weights do not fit the model '{self.spec}': missing {missing[:5]}, unexpected {unexpected[:5]}")
        for i, layer in enumerate(self.layers):
            for group in (layer.params, layer.buffers):
                for n in group:
                    v = np.asarray(state[f"{i}.{n}"])
                    if v.shape != np.shape(group[n]):
                        raise CnnlabError(f"weight '{i}.{n}' of layer '{layer.name}' has shape {v.shape}, the model needs {np.shape(group[n])}")
            for n, p in layer.params.items():
                p[...] = state[f"{i}.{n}"]  # in place: optimizers hold references to these arrays
            for n, b in layer.buffers.items():
                layer.buffers[n] = np.array(state[f"{i}.{n}"], dtype=np.asarray(b).dtype)

    # ---------------------------------------------------------------- computation
    def _check_input(self, x):
        x = np.asarray(x)
        if x.ndim != len(self.in_shape) + 1 or tuple(x.shape[1:]) != self.in_shape:
            first = self.layers[0].name
            raise CnnlabError(f"layer 0 '{first}' expects input of shape (N, {', '.join(map(str, self.in_shape))}), "
                              f"got {tuple(x.shape)}: the model was built for {'x'.join(map(str, self.in_shape))} images")
        return x.astype(self.dtype, copy=False)

    def forward(self, x):
        """Scores and the per-layer caches backward needs."""
        x = self._check_input(x)
        caches = []
        for layer in self.layers:
            x, cache = layer.forward(x, self.training)
            caches.append(cache)
        return x, caches

    def backward(self, dscores, caches) -> dict:
        grads, d = {}, dscores
        for i in range(len(self.layers) - 1, -1, -1):
            d, g = self.layers[i].backward(d, caches[i])
            for n, v in g.items():
                grads[f"{i}.{n}"] = v
        return grads

    def release(self, caches):
        """Hand the caches' large arrays back for reuse: the step is done with them."""
        for layer, cache in zip(self.layers, caches):
            layer.release(cache)

    def scores(self, x):
        return self.forward(x)[0]

    def loss(self, x, y, return_scores=False):
        """Mean loss over the batch and the gradient of every parameter, in the current mode."""
        y = np.asarray(y).astype(np.int64).reshape(-1)
        if len(y) != len(x):
            raise CnnlabError(f"{len(x)} images but {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise CnnlabError(f"labels must lie in 0..{self.num_classes - 1}, got {y.min()}..{y.max()}")
        scores, caches = self.forward(x)
        loss, dscores = compute_loss(self.loss_name, scores, y, self.label_smoothing)
        grads = self.backward(dscores, caches)
        self.release(caches)
        grads = {n: grads[n] for n in self.named_params()}  # layer order, like the parameters
        return (loss, grads, scores) if return_scores else (loss, grads)

    # ---------------------------------------------------------------- PyTorch
    def to_torch(self):
        """A `cnnlab.models.classic.SpecNet` with these weights (float64 if this model is)."""
        import torch

        from cnnlab.models.classic import SpecNet

        net = SpecNet(self.spec, self.num_classes, self.in_shape[0], self.in_shape[1:])
        if self.dtype == np.float64:
            net = net.double()
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.state_dict().items()})
        net.loss_name = self.loss_name
        return net.train(self.training)

    @classmethod
    def from_torch(cls, module, in_shape, dtype=np.float32, backend="numpy", **kw):
        """A ScratchNet with the weights of a SpecNet (anything with `.spec` and its state_dict keys)."""
        spec = getattr(module, "spec", None)
        if not spec:
            raise CnnlabError("from_torch needs a model built from a spec (cnnlab.models.classic.SpecNet); this one has no .spec")
        state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
        last_fc = [k for k in state if k.endswith(".weight") and state[k].ndim == 2][-1]
        net = cls(spec, state[last_fc].shape[0], in_shape, dtype, backend, **kw)
        net.load_state_dict(state)
        return net.train(module.training)
