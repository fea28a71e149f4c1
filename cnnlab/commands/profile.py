"""`cnnlab profile`: time every layer of a scratch-engine training step."""

from __future__ import annotations

import json
from pathlib import Path

from cnnlab.commands.common import add_json_flag, parse_shape, print_json
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text


def add_parser(subparsers):
    p = subparsers.add_parser(
        "profile", help="time each layer's forward and backward pass (scratch engine)",
        description="Run training steps of a model on random data and report, per layer, the median forward "
                    "and backward time and its share of the step; with --out, also a bar chart PNG.")
    p.add_argument("--engine", default="scratch", choices=["scratch"], help="the engine to profile (scratch)")
    p.add_argument("--model", required=True, metavar="SPEC", help="architecture spec, e.g. c32k7-relu-p2-fc100-relu-fc10")
    p.add_argument("--backend", default="numpy", choices=["numpy", "numba"], help="kernels (default numpy)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--input", default="3x32x32", metavar="CxHxW", help="image shape (default 3x32x32)")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps; the figures are medians (default 5)")
    p.add_argument("--out", metavar="DIR", help="write profile.png and profile.json here")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from cnnlab.scratch.model import ScratchNet
    from cnnlab.scratch.profile import format_profile, plot_profile, profile_step

    if args.batch_size < 1 or args.repeats < 1:
        raise CnnlabError("--batch-size and --repeats must be at least 1")
    if args.classes < 1:
        raise CnnlabError(f"--classes must be at least 1, got {args.classes}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise CnnlabError(f"--out {args.out} is a file: give a folder for profile.png and profile.json")
    shape = parse_shape(args.input)
    net = ScratchNet(args.model, args.classes, shape, np.float32, args.backend)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, *shape)).astype(np.float32)
    y = rng.integers(0, args.classes, args.batch_size)
    result = profile_step(net, x, y, repeats=args.repeats, warmup=2 if args.backend == "numba" else 1)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plot_profile(result, out / "profile.png")
        atomic_write_text(out / "profile.json", json.dumps(result, indent=2))
        result["files"] = [str(out / "profile.png"), str(out / "profile.json")]
    if args.json:
        print_json(result)
    else:
        print(f"{result['spec']}  backend {args.backend}, batch {args.batch_size}, {'x'.join(map(str, shape))}, "
              f"median of {args.repeats} steps")
        print(format_profile(result))
        if args.out:
            print(f"wrote {', '.join(result['files'])}")
    return 0
