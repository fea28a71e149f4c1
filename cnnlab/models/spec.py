"""The architecture spec grammar, shared by the PyTorch and the NumPy engines.

A spec is a string of tokens joined by `-`, read left to right, for example

    c32k3-relu-p2-c64k3-relu-p2-fc128-relu-fc10
    [c32k3-bn-relu-c32k3-bn-relu-p2]x3-fc10-svm

Tokens (N, K, S, P, G are integers):

    cNkK[sS][pP][gG]   2-D convolution: N output channels, KxK kernel, stride S (1),
                       zero padding P (default K//2, "same" for odd K at stride 1), groups G (1)
    dwkK[sS][pP]       depthwise convolution (groups = channels, output channels = input channels)
    whK                patch whitening: a fixed, unpadded KxK convolution with 2*C*K*K filters fitted
                       to the training images' KxK patches (the fast recipe's stem, e.g. wh2-relu;
                       its bias trains; PyTorch engine only)
    pK[sS] | mpK[sS]   max pooling, window K, stride S (default K)
    apK[sS]            average pooling
    gap                global average pooling (to 1x1)
    bn                 batch norm (2-D before the first fc, 1-D after)
    relu relu6 tanh sigmoid lreluA (A = slope, default 0.01)
    dR                 dropout with probability R, e.g. d0.5
    flat               flatten (implied before the first fc)
    fcN                fully connected layer with N outputs
    softmax | svm      the loss, last token only: softmax cross-entropy (default) or
                       multiclass SVM (hinge)

`[ ... ]xN` repeats a group N times; groups nest. Upper or lower case both work.
If a spec does not end in an `fc` layer, one with `num_classes` outputs is appended.

Residual blocks:

    r[ ... ]           out = body(x) + shortcut(x): the tokens inside are the body (image
                       layers only: no fc, flat or gap). The shortcut is x itself when the body
                       keeps the shape, else a 1x1 convolution with the body's stride and
                       output channels (a projection, He et al. 2016). Put an activation after
                       the block if you want one: r[c64k3-bn-relu-c64k3-bn]-relu
    r[ ... ]xN         N blocks in a row; blocks nest, and go inside repeated groups

For example a small ResNet: c32k3-bn-relu-[r[c32k3-bn-relu-c32k3-bn]-relu]x2-
r[c64k3s2-bn-relu-c64k3-bn]-relu-gap-fc10. Both engines build the same network (the NumPy
engine's `Residual` layer), with the same parameter names (`3.body.0.weight`,
`3.shortcut.weight`), and the cost model counts the skip tensor in the peak activation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cnnlab.errors import SpecError
from cnnlab.losses import LOSSES  # a spec's last token may name a loss of the table
ACTIVATIONS = ("relu", "relu6", "tanh", "sigmoid", "lrelu")


@dataclass(frozen=True)
class Layer:
    """One parsed token. `args` holds the layer's hyper-parameters."""

    kind: str  # conv, whiten, maxpool, avgpool, gap, bn, relu, relu6, tanh, sigmoid, lrelu, dropout, flatten, fc
    args: dict = field(default_factory=dict)
    token: str = ""

    def __hash__(self):  # dict args: hash by the token text
        return hash((self.kind, self.token))


@dataclass(frozen=True)
class Spec:
    layers: tuple
    loss: str = "softmax"
    text: str = ""


_CONV = re.compile(r"^c(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?(?:g(\d+))?$")
_DW = re.compile(r"^dwk(\d+)(?:s(\d+))?(?:p(\d+))?$")
_WHITEN = re.compile(r"^wh(\d+)$")
_POOL = re.compile(r"^(mp|ap|p)(\d+)(?:s(\d+))?$")
_FC = re.compile(r"^fc(\d+)$")
_DROP = re.compile(r"^d(0?\.\d+|0|1(?:\.0*)?)$")
_LRELU = re.compile(r"^lrelu(\d*\.?\d+)?$")


def _parse_token(tok: str) -> Layer:
    if m := _RESIDUAL.match(tok.strip()):
        return _parse_residual(tok, m.group(1))
    t = tok.lower()
    if m := _CONV.match(t):
        out, k, s, p, g = m.groups()
        k = int(k)
        args = dict(out=int(out), k=k, stride=int(s or 1), pad=k // 2 if p is None else int(p), groups=int(g or 1))
        if args["out"] < 1 or k < 1 or args["stride"] < 1 or args["groups"] < 1:
            raise SpecError(f"bad token '{tok}': channels, kernel, stride and groups must be at least 1")
        if args["out"] % args["groups"]:
            raise SpecError(f"bad token '{tok}': {args['out']} output channels do not divide into {args['groups']} groups")
        return Layer("conv", args, tok)
    if m := _DW.match(t):
        k, s, p = m.groups()
        k = int(k)
        if k < 1:
            raise SpecError(f"bad token '{tok}': kernel must be at least 1")
        return Layer("conv", dict(out=None, k=k, stride=int(s or 1), pad=k // 2 if p is None else int(p), groups=None), tok)
    if m := _WHITEN.match(t):
        if int(m.group(1)) < 1:
            raise SpecError(f"bad token '{tok}': the whitening patch must be at least 1 pixel, e.g. wh2")
        return Layer("whiten", dict(k=int(m.group(1))), tok)
    if m := _POOL.match(t):
        kind, k, s = m.groups()
        k = int(k)
        if k < 1:
            raise SpecError(f"bad token '{tok}': pooling window must be at least 1")
        return Layer("avgpool" if kind == "ap" else "maxpool", dict(k=k, stride=int(s or k)), tok)
    if m := _FC.match(t):
        if int(m.group(1)) < 1:
            raise SpecError(f"bad token '{tok}': fc needs at least 1 output")
        return Layer("fc", dict(out=int(m.group(1))), tok)
    if m := _DROP.match(t):
        return Layer("dropout", dict(p=float(m.group(1))), tok)
    if m := _LRELU.match(t):
        return Layer("lrelu", dict(slope=float(m.group(1) or 0.01)), tok)
    if t in ("relu", "relu6", "tanh", "sigmoid", "bn", "gap"):
        return Layer(t, {}, tok)
    if t in ("flat", "flatten"):
        return Layer("flatten", {}, tok)
    raise SpecError(
        f"bad token '{tok}' in model spec: expected one of cNkK, dwkK, whK, pK, mpK, apK, gap, bn, relu, relu6, "
        "tanh, sigmoid, lrelu, dR, flat, fcN, r[...], softmax, svm (see `cnnlab models --grammar`)"
    )


_RESIDUAL = re.compile(r"^[rR]\[(.*)\]\s*(?:[xX]\s*(\d+))?$", re.S)
IMAGE_ONLY = ("fc", "flatten", "gap")  # kinds a residual body may not hold: they leave the image shape


def _parse_residual(tok: str, inner: str) -> Layer:
    body = tuple(_parse_token(t) for t in _expand(inner)) if inner.strip() else ()
    if not body:
        raise SpecError(f"bad residual block '{tok}': it has no layers; write r[c32k3-bn-relu-c32k3-bn]")
    for layer in body:
        if layer.kind in IMAGE_ONLY or layer.token.lower() in LOSSES:
            raise SpecError(f"bad token '{layer.token}' in residual block '{tok}': a block's body keeps images "
                            "(convolutions, pooling, bn, activations, dropout); put fc, flat and gap after it")
    return Layer("residual", dict(body=body), tok)


def _split_top(s: str) -> list[str]:
    """Split on '-' outside brackets."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SpecError("unbalanced ']' in model spec")
        if ch == "-" and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SpecError("unbalanced '[' in model spec: every '[' needs a closing ']xN'")
    parts.append("".join(cur))
    return parts


MAX_LAYERS = 10_000  # a spec expanding past this is a typo in a repeat count, not a network


def _expand(s: str) -> list[str]:
    out = []
    for part in _split_top(s):
        part = part.strip()
        if not part:
            raise SpecError(f"empty token in model spec '{s}' (two '-' in a row, or a '-' at an end)")
        if m := _RESIDUAL.match(part):
            n = int(m.group(2) or 1)
            if n < 1:
                raise SpecError(f"bad residual block '{part}': repeat count must be at least 1")
            size = 1 + len(_expand(m.group(1))) if m.group(1).strip() else 1
            if len(out) + size * n > MAX_LAYERS:
                raise SpecError(f"bad residual block '{part[:40]}...': it repeats to {size * n:,} layers; a spec may "
                                f"have at most {MAX_LAYERS:,}")
            out.extend([f"r[{m.group(1)}]"] * n)
        elif part.startswith("["):
            m = re.match(r"^\[(.*)\]\s*[xX]\s*(\d+)$", part, re.S)
            if not m:
                raise SpecError(f"bad group '{part}': write a repeated group as [tokens]xN, e.g. [c32k3-relu]x2")
            n = int(m.group(2))
            if n < 1:
                raise SpecError(f"bad group '{part}': repeat count must be at least 1")
            inner = _expand(m.group(1))
            if len(out) + len(inner) * n > MAX_LAYERS:
                raise SpecError(f"bad group '{part[:40]}{'...' if len(part) > 40 else ''}': it repeats to "
                                f"{len(inner) * n:,} layers; a spec may have at most {MAX_LAYERS:,}")
            out.extend(inner * n)
        else:
            out.append(part)
    return out


def looks_like_spec(text: str) -> bool:
    """True when a --model value is a spec rather than a registered model name: it has several
    tokens, a group, or is one conv or fc token (`c16k3`, `fc120`)."""
    t = text.strip().lower()
    if "(" in t:  # a registered model with options, fastnet(widths=[16, 64, 128]): specs have no "("
        return False
    return "-" in t or "[" in t or bool(_CONV.match(t) or _DW.match(t) or _WHITEN.match(t) or _FC.match(t))


def parse_spec(text: str) -> Spec:
    if not isinstance(text, str) or not text.strip():
        raise SpecError("empty model spec: give tokens such as c32k3-relu-p2-fc10")
    tokens = _expand(text.strip())
    loss = "softmax"
    if tokens and tokens[-1].lower() in LOSSES:
        loss = tokens.pop().lower()
    for t in tokens:
        if t.lower() in LOSSES:
            raise SpecError(f"bad token '{t}': the loss ({'/'.join(LOSSES)}) may only be the last token")
    if not tokens:
        raise SpecError(f"model spec '{text}' has no layers")
    return Spec(tuple(_parse_token(t) for t in tokens), loss, text.strip())


def resolve(spec: Spec, in_shape: tuple, num_classes: int) -> list[tuple[Layer, tuple, tuple]]:
    """Fill in what depends on the input and check every shape.

    Returns `(layer, in_shape, out_shape)` per layer with concrete args (depthwise channels,
    fc inputs, implied flatten and final fc). Shapes exclude the batch dimension.
    Raises SpecError naming the token whose output would be empty or invalid.
    """
    shape = tuple(int(v) for v in in_shape)
    layers = list(spec.layers)
    if layers[-1].kind != "fc":
        layers.append(Layer("fc", dict(out=num_classes), f"fc{num_classes}"))
    elif layers[-1].args["out"] != num_classes:
        raise SpecError(
            f"the spec ends in '{layers[-1].token}' but the dataset has {num_classes} classes: "
            f"end it with fc{num_classes} or leave the last fc out"
        )
    out = []
    for layer in layers:
        if layer.kind == "fc" and len(shape) == 3:
            flat = Layer("flatten", {}, "flat")
            new = (shape[0] * shape[1] * shape[2],)
            out.append((flat, shape, new))
            shape = new
        out.append(_resolve_one(layer, shape))
        shape = out[-1][2]
    return out


def _resolve_one(layer: Layer, shape: tuple):
    """(layer with concrete args, in shape, out shape), or a SpecError naming its token."""
    if layer.kind == "residual":
        return _resolve_residual(layer, shape)
    args = dict(layer.args)
    if layer.kind == "conv":
        if len(shape) != 3:
            raise SpecError(f"layer '{layer.token}' is a convolution but its input is flat {shape}: put it before the first fc")
        c, h, w = shape
        if args["groups"] is None:  # depthwise
            args["out"], args["groups"] = c, c
        if c % args["groups"]:
            raise SpecError(f"layer '{layer.token}': {c} input channels do not divide into {args['groups']} groups")
        k, s, p = args["k"], args["stride"], args["pad"]
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if ho < 1 or wo < 1:
            raise SpecError(f"layer '{layer.token}': a {k}x{k} kernel does not fit its {h}x{w} input (padding {p}); the spec shrinks the image too much")
        args["in"] = c
        new = (args["out"], ho, wo)
    elif layer.kind == "whiten":  # an unpadded KxK convolution to 2*C*K*K channels
        if len(shape) != 3:
            raise SpecError(f"layer '{layer.token}' whitens image patches but its input is flat: put it first")
        c, h, w = shape
        k = args["k"]
        if k > h or k > w:
            raise SpecError(f"layer '{layer.token}': a {k}x{k} patch does not fit its {h}x{w} input")
        args.update({"in": c, "out": 2 * c * k * k})
        new = (args["out"], h - k + 1, w - k + 1)
    elif layer.kind in ("maxpool", "avgpool"):
        if len(shape) != 3:
            raise SpecError(f"layer '{layer.token}' is a pooling layer but its input is flat: put it before the first fc")
        c, h, w = shape
        k, s = args["k"], args["stride"]
        ho, wo = (h - k) // s + 1, (w - k) // s + 1
        if ho < 1 or wo < 1:
            raise SpecError(f"layer '{layer.token}': a {k}x{k} window does not fit its {h}x{w} input; the spec shrinks the image too much")
        new = (c, ho, wo)
    elif layer.kind == "gap":
        if len(shape) != 3:
            raise SpecError(f"layer '{layer.token}' needs an image input, but its input is flat")
        new = (shape[0], 1, 1)
    elif layer.kind == "flatten":
        new = (int(_prod(shape)),)
    elif layer.kind == "fc":
        args["in"] = shape[0]
        new = (args["out"],)
    else:  # elementwise: activations, bn, dropout
        if layer.kind == "bn":
            args["features"], args["ndim"] = shape[0], len(shape)
        new = shape
    return Layer(layer.kind, args, layer.token), shape, new


def _resolve_residual(layer: Layer, shape: tuple):
    """(residual layer with resolved `body` and `shortcut` args, in shape, out shape)."""
    if len(shape) != 3:
        raise SpecError(f"residual block '{layer.token}' needs an image input, but its input is flat {shape}")
    body = _resolve_layers(layer.args["body"], shape)
    out_shape = body[-1][2]
    shortcut = None
    if out_shape != shape:
        (c, h, w), (co, ho, wo) = shape, out_shape
        stride = max(1, -(-h // ho))
        if ((h - 1) // stride + 1, (w - 1) // stride + 1) != (ho, wo):
            raise SpecError(f"residual block '{layer.token}' turns {h}x{w} into {ho}x{wo}, which no strided 1x1 "
                            "shortcut matches: keep the size, or halve it with one stride-2 layer")
        conv = Layer("conv", dict(out=co, k=1, stride=stride, pad=0, groups=1, **{"in": c}), f"c{co}k1s{stride}")
        shortcut = (conv, shape, out_shape)
    return Layer("residual", dict(body=tuple(body), shortcut=shortcut), layer.token), shape, out_shape


def _resolve_layers(layers, shape):
    """Resolve a residual body: image layers only, so no implied flatten or fc."""
    out = []
    for layer in layers:
        out.append(_resolve_one(layer, shape))
        shape = out[-1][2]
    return out


def spec_size(resolved) -> tuple[int, int]:
    """(parameters, largest activation in elements per image) of a resolved spec, without building it.
    A residual block's largest activation counts its input, still held for the addition."""
    params, largest = 0, 0
    for layer, in_shape, out_shape in resolved:
        a = layer.args
        if layer.kind == "residual":
            inner = list(a["body"]) + ([a["shortcut"]] if a["shortcut"] else [])
            p, big = spec_size(inner)
            params += p
            largest = max(largest, big + _prod(in_shape))
            continue
        if layer.kind == "conv":
            params += a["out"] * (a["in"] // a["groups"]) * a["k"] * a["k"] + a["out"]
        elif layer.kind == "whiten":
            params += a["out"] * a["in"] * a["k"] * a["k"] + a["out"]
        elif layer.kind == "fc":
            params += a["in"] * a["out"] + a["out"]
        elif layer.kind == "bn":
            params += 2 * a["features"]
        largest = max(largest, _prod(in_shape), _prod(out_shape))
    return params, largest


def _prod(shape):
    n = 1
    for v in shape:
        n *= v
    return n
