"""The model registry: every model cnnlab can build, by name.

    @register_model("lenet5")
    def lenet5(num_classes=10, in_channels=3, input_size=32, **kw) -> nn.Module: ...

    model = create_model("lenet5", num_classes=10, in_channels=1, input_size=28)

Every builder takes `num_classes`, `in_channels` and `input_size` (an int or (H, W)) and
returns an `nn.Module` whose `forward` maps (N, C, H, W) float images to (N, num_classes)
scores. A builder may set `model.loss_name` ("softmax" or "svm"); the default is softmax.
A `--model` value that is not a registered name but looks like a spec string
(`c32k3-relu-p2-fc10`) builds the `convnet` model from that spec.

A registered name may carry its builder's options, written as a call with keyword arguments whose
values are Python literals: `fastnet(widths=[16, 64, 128], depth=2)` is
`create_model("fastnet", widths=[16, 64, 128], depth=2)`. The whole model then fits in one string,
so a search file's `space.spec` template can search a zoo model's options as it searches a spec
(`fastnet(widths=[{w1}, {w2}, {w3}])`), and a run's config, trials.csv and reports name it whole.
Options given both there and in `model_args` are refused.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
from typing import Callable

from cnnlab.errors import CnnlabError

_REGISTRY: dict[str, Callable] = {}
_TAGS: dict[str, tuple] = {}


def register_model(name: str, tags: tuple = ()):
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = fn
        _TAGS[name] = tuple(tags)
        return fn

    return deco


_CALL = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*\((.*)\)\s*$", re.S)


def split_model_call(text: str, kwargs: dict | None = None) -> tuple[str, dict]:
    """(name, options) of a model name written as a call, `fastnet(widths=[16, 64, 128])`, merged
    with `kwargs`; any other text is (text, kwargs). Bad syntax or an option given twice is one line."""
    m = _CALL.match(text) if isinstance(text, str) else None
    if not m:
        return text, dict(kwargs or {})
    name, inner = m.group(1), m.group(2)
    example = f"write options as {name}(widths=[16, 64, 128], depth=2)"
    try:
        call = ast.parse(f"f({inner})", mode="eval").body
        if call.args:
            raise ValueError("positional argument")
        options = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        if any(k is None for k in options):
            raise ValueError("** argument")
    except (SyntaxError, ValueError) as e:
        raise CnnlabError(f"bad model '{text}': its options must be keyword=literal pairs ({e}): {example}") from None
    twice = sorted(set(options) & set(kwargs or {}))
    if twice:
        raise CnnlabError(f"model '{text}' sets {twice[0]}, and model_args sets it too: give it once")
    return name, {**(kwargs or {}), **options}


def model_name(text: str) -> str:
    """The registered name of a model string: `fastnet(widths=[16, 64, 128])` -> `fastnet`."""
    m = _CALL.match(text) if isinstance(text, str) else None
    return m.group(1) if m else text


def list_models(tag: str | None = None) -> list[str]:
    return sorted(n for n in _REGISTRY if tag is None or tag in _TAGS[n])


def model_builder(name: str) -> Callable:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise CnnlabError(f"unknown model '{name}'{hint}: see `cnnlab models` for the list, or give a spec such as c32k3-relu-p2-fc10")
    return _REGISTRY[name]


def check_model_options(name: str, kwargs: dict):
    """Raise a one-line error naming an option the model's builder does not take (no model is built)."""
    from cnnlab.models.spec import looks_like_spec

    name, kwargs = split_model_call(name, kwargs)
    if name not in _REGISTRY and looks_like_spec(name):
        name = "convnet"
    _check_options(name, model_builder(name), dict(kwargs, spec=None) if name == "convnet" else kwargs)


def _check_options(name, builder, kwargs):
    params = inspect.signature(builder).parameters
    known = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        options = sorted(known - {"num_classes", "in_channels", "input_size"})
        raise CnnlabError(f"model '{name}' has no option '{unknown[0]}': its options are {', '.join(options) or 'none'}")


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, input_size=32, **kwargs):
    """Build a registered model, or a `convnet` when `name` is a spec string."""
    from cnnlab.models.spec import looks_like_spec

    name, kwargs = split_model_call(name, kwargs)
    if name not in _REGISTRY and looks_like_spec(name):
        kwargs["spec"] = name
        name = "convnet"
    builder = model_builder(name)
    _check_options(name, builder, kwargs)
    model = builder(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kwargs)
    model.model_name = name
    if not hasattr(model, "loss_name"):
        model.loss_name = "softmax"
    return model
