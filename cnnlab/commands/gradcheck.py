"""`cnnlab gradcheck`: compare a scratch model's backward pass with finite differences."""

from __future__ import annotations

from cnnlab.commands.common import add_json_flag, parse_shape, print_json
from cnnlab.errors import CnnlabError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "gradcheck", help="check a model's gradients against finite differences (scratch engine, float64)",
        description="Build the model in float64 with the scratch engine, compute the loss gradient of every "
                    "parameter by backpropagation and by centered finite differences, and print the maximum "
                    "relative error per parameter. Exits with 1 when any error is above the threshold.")
    p.add_argument("--model", required=True, metavar="SPEC", help="architecture spec, e.g. c8k3-bn-relu-p2-fc10")
    p.add_argument("--input", default="3x8x8", metavar="CxHxW", help="image shape (default 3x8x8: small is enough)")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument("--batch-size", type=int, default=4, help="random images in the batch (default 4)")
    p.add_argument("--threshold", type=float, default=1e-7, help="largest acceptable relative error (default 1e-7)")
    p.add_argument("--entries", type=int, default=40,
                   help="entries checked per parameter, chosen at random; 0 checks all (default 40)")
    p.add_argument("--backend", default="numpy", choices=["numpy", "numba"], help="kernels (default numpy)")
    p.add_argument("--seed", type=int, default=0)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from cnnlab.scratch.gradcheck import check_model, format_table
    from cnnlab.scratch.model import ScratchNet

    if args.batch_size < 2:
        raise CnnlabError("--batch-size must be at least 2 (batch norm needs a batch)")
    for flag, value, ok, must in (("--classes", args.classes, args.classes >= 1, "at least 1"),
                                  ("--entries", args.entries, args.entries >= 0, "0 (all) or more"),
                                  ("--threshold", args.threshold, 0 < args.threshold < float("inf"),
                                   "a positive relative error, e.g. 1e-7"),
                                  ("--seed", args.seed, args.seed >= 0, "a non-negative integer")):
        if not ok:
            raise CnnlabError(f"{flag} must be {must}, got {value}")
    shape = parse_shape(args.input)
    net = ScratchNet(args.model, args.classes, shape, np.float64, args.backend, args.seed)
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch_size, *shape))
    y = rng.integers(0, args.classes, args.batch_size)
    rows = check_model(net, x, y, entries=args.entries or None, seed=args.seed)
    worst = max(r["rel_error"] for r in rows)
    passed = worst <= args.threshold
    if args.json:
        print_json(dict(model=net.spec, input=list(shape), threshold=args.threshold, max_rel_error=worst,
                        passed=passed, parameters=rows))
    else:
        print(format_table(rows, args.threshold))
        print(f"max relative error {worst:.2e}: {'pass' if passed else 'FAIL'} (threshold {args.threshold:g})")
    return 0 if passed else 1
