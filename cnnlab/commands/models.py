"""`cnnlab models`: list every model with its parameters and MACs, or print the spec grammar."""

from __future__ import annotations

import json

from cnnlab.commands.common import parse_shape
from cnnlab.errors import CnnlabError


def add_parser(subparsers):
    p = subparsers.add_parser("models", help="list the models (parameters, MACs) or print the spec grammar",
                              description="List every registered model with its parameter count and "
                                          "multiply-accumulates per image, or print the architecture spec grammar.")
    p.add_argument("--input", default="3x32x32", metavar="CxHxW", help="input shape for the counts (default 3x32x32)")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument("--tag", help="only models with this tag (e.g. zoo, classic, resnet, mobile)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--grammar", action="store_true", help="print the architecture spec grammar and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.grammar:
        import cnnlab.models.spec as spec

        print(spec.__doc__.strip())
        return 0
    from cnnlab.models import list_models
    from cnnlab.models.summary import model_summary

    shape = parse_shape(args.input)
    if args.classes < 1:
        raise CnnlabError("--classes must be at least 1")
    names = list_models(args.tag)
    if not names:
        raise CnnlabError(f"no model has the tag '{args.tag}'")
    rows = []
    for name in names:
        try:
            rows.append(model_summary(name, shape, args.classes))
        except Exception as e:  # a model that cannot take this input is listed, not fatal
            rows.append({"name": name, "params": None, "macs": None, "doc": f"(does not build for {args.input}: {e})"})
    if args.json:
        print(json.dumps({"input": list(shape), "classes": args.classes, "models": rows}, indent=2))
        return 0
    print(f"{'model':<18} {'params':>10} {'MACs':>10}  description  (input {args.input}, {args.classes} classes)")
    for r in rows:
        params = "-" if r["params"] is None else f"{r['params'] / 1e6:.3f}M"
        macs = "-" if r["macs"] is None else f"{r['macs'] / 1e6:.1f}M"
        print(f"{r['name']:<18} {params:>10} {macs:>10}  {r['doc'][:80]}")
    return 0
