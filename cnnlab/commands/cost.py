"""`cnnlab cost`: per-layer parameters, MACs, FLOPs, activations, accelerator cycles and energy."""

from __future__ import annotations

from cnnlab.commands.common import add_json_flag, print_json


def add_parser(sub):
    p = sub.add_parser("cost", help="per-layer cost: params, MACs, FLOPs, activations, accelerator cycles and energy",
                       description="Trace one batch-1 forward pass of a model and cost every layer: parameters, "
                                   "MACs, FLOPs, activation and weight bytes, peak activation (competition rule) "
                                   "and cycles and energy on a weight-stationary accelerator.")
    p.add_argument("model", metavar="MODEL_OR_RUN", help="a registered model name, a spec string or a run directory")
    p.add_argument("--input", metavar="CxHxW", help="input shape (default 3x32x32, or the run's)")
    p.add_argument("--classes", "--num-classes", dest="num_classes", type=int, default=None,
                   help="classes of a model built by name (default 10)")
    p.add_argument("--max-activation", default="1MB",
                   help="peak activation limit: 1MB = 1,000,000 bytes (default); 1MiB = 1,048,576")
    p.add_argument("--arch", metavar="FILE.yaml", help="accelerator architecture (see docs/cost.md; default: "
                                                        "the 256-PE simple weight-stationary design)")
    p.add_argument("--backend", choices=("analytic", "timeloop"), default="analytic",
                   help="analytic (milliseconds, default) or timeloop (runs timeloop-mapper per layer)")
    add_bits_option(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def add_bits_option(p):
    p.add_argument("--bits", type=int, choices=(8, 16, 32), default=32,
                   help="word width of activations and weights: 32 (fp32, default), 16 or 8 (int8); changes "
                        "bytes and energy, not cycles (docs/cost.md)")


def run(args) -> int:
    from cnnlab.cost.accelerator import DEFAULT_ACCELERATOR, Accelerator
    from cnnlab.commands.common import load_model, parse_bytes, parse_shape
    from cnnlab.cost.report import analyze, format_table

    shape = parse_shape(args.input) if args.input else None
    if args.num_classes is not None and args.num_classes < 1:
        from cnnlab.errors import CnnlabError

        raise CnnlabError(f"--classes must be at least 1, got {args.num_classes}")
    limit = parse_bytes(args.max_activation)
    arch = Accelerator.load(args.arch) if args.arch else DEFAULT_ACCELERATOR
    model, shape, name = load_model(args.model, shape, args.num_classes)
    rep = analyze(model, shape, arch, backend=args.backend, max_activation=limit, name=name,
                  bits=args.bits)
    if args.json:
        print_json(rep.to_dict())
    else:
        print(format_table(rep))
    return 0
