"""`cnnlab recipes`: the ready training configs, with what each is for and its measured figures."""

from __future__ import annotations

import textwrap

from cnnlab.commands.common import add_json_flag, print_json


def add_parser(sub):
    p = sub.add_parser("recipes", help="list the training recipes (cnnlab train --recipe NAME)",
                       description="List the ready training configs with their measured figures, or show one "
                                   "(copy it to change it: cnnlab recipes fast --show > my.yaml; "
                                   "cnnlab train --config my.yaml).")
    p.add_argument("name", nargs="?", help="one recipe to describe")
    p.add_argument("--show", action="store_true", help="print the recipe's YAML file as it is")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.recipes import describe, recipe_names, recipe_path

    names = [args.name] if args.name else recipe_names()
    if args.show:
        for name in names:
            print(recipe_path(name).read_text(), end="")
        return 0
    info = [describe(n) for n in names]
    if args.json:
        print_json(info if args.name is None else info[0])
        return 0
    for d in info:
        c = d["config"]
        print(f"{d['name']}: {c.get('model')} on {c.get('dataset')}, {c.get('epochs')} epochs, batch "
              f"{c.get('batch_size')}, {c.get('optimizer')} ({d['path']})")
        print(textwrap.indent(textwrap.fill(d["about"], 96), "    "))
        for m in d["measured"] or ["not measured yet"]:
            print(f"    measured: {m}")
    print("train with: cnnlab train --recipe NAME [--flags that change it]")
    return 0
