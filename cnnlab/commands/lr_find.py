"""`cnnlab lr-find`: the learning-rate range test, plotted, with a suggested learning rate.

    cnnlab lr-find --model resnet20 --dataset cifar10 --subset 5000 --out lr_find.png

The work is `cnnlab.workflows.measure.lrfind`.
"""

from __future__ import annotations

import json

from cnnlab.errors import CnnlabError


def add_parser(subparsers):
    p = subparsers.add_parser("lr-find", help="run a learning-rate range test and suggest a learning rate",
                              description="Train briefly while the learning rate grows exponentially, plot the "
                                          "smoothed loss against it and suggest the rate where it falls fastest.")
    p.add_argument("--model", required=True, help="a registered model name or a spec string")
    p.add_argument("--dataset", default="mnist", help="dataset name (default mnist)")
    p.add_argument("--data-dir", help="dataset directory (default: $CNNLAB_DATA_DIR or the cache)")
    p.add_argument("--subset", type=int, help="use only this many training images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="sgd", help="optimizer name (default sgd)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--augment", default="none")
    p.add_argument("--start-lr", type=float, default=1e-6)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=200, help="number of training steps in the ramp (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="lr_find.png", help="where to write the plot (default lr_find.png)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.workflows.measure.lrfind import find_lr, plot_lr_find

    check_args(args)
    result = find_lr(args.model, args.dataset, args.data_dir, args.subset, args.batch_size, args.optimizer,
                     augment=args.augment, seed=args.seed, start_lr=args.start_lr, end_lr=args.end_lr,
                     steps=args.steps, momentum=args.momentum, weight_decay=args.weight_decay)
    if not result.lrs:
        raise CnnlabError(f"the loss was not finite from the first step: lower --start-lr (now {args.start_lr})")
    plot = plot_lr_find(result, args.out, title=f"LR range test: {args.model} on {args.dataset} ({args.optimizer})")
    if args.json:
        d = result.to_dict()
        d["plot"] = str(plot)
        print(json.dumps(d))
    else:
        stop = "stopped at divergence" if result.diverged else "full ramp"
        print(f"suggested lr: {result.suggestion:.3g}  (minimum loss at lr {result.min_loss_lr:.3g}; "
              f"{len(result.lrs)} steps, {stop}); plot: {plot}")
    return 0


def check_args(args):
    """The flags `cnnlab train` shares, held to its ranges, and a plot file matplotlib can write: before
    the dataset is read and the ramp is run, not after."""
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    from cnnlab.train.validate import RANGES

    for key in ("batch_size", "subset", "momentum", "weight_decay", "seed"):
        ok, must = RANGES[key]
        value = getattr(args, key)
        if value is not None and not ok(value):
            raise CnnlabError(f"--{key.replace('_', '-')} must be {must}, got {value!r}")
    out = Path(args.out)
    if out.is_dir():
        raise CnnlabError(f"--out {args.out} is a directory: give a file name for the plot, e.g. {out / 'lr_find.png'}")
    kinds = FigureCanvasBase.get_supported_filetypes()
    if out.suffix and out.suffix[1:].lower() not in kinds:
        raise CnnlabError(f"--out {args.out}: a plot cannot be written as {out.suffix}; use .png, .pdf or .svg")
