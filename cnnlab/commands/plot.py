"""`cnnlab plot RUN_DIR`: PNG figures of a run in RUN_DIR/plots/."""

from __future__ import annotations

from cnnlab.commands.common import add_json_flag, print_json


def add_parser(sub):
    p = sub.add_parser("plot", help="write plots of a run into RUN_DIR/plots",
                       description="Draw a run's figures into RUN_DIR/plots/: loss.png (training loss per iteration, "
                                   "validation loss per epoch), accuracy.png, lr.png, filters.png (the first "
                                   "convolution's filters), confusion.png and mistakes.png (the most confidently "
                                   "wrong test images). The last two evaluate the best weights on the test split. "
                                   "A figure the run cannot give (no metrics yet, no convolution layer, no test "
                                   "data) is skipped with a note. Works for runs of both engines.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data-dir", help="where the dataset is, if not where the run found it")
    p.add_argument("--device", default="cpu", help="device for the test evaluation (default cpu)")
    p.add_argument("--no-eval", dest="evaluate", action="store_false",
                   help="skip the test evaluation (no confusion matrix or mistakes, unless evaluation.json has one)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.workflows.report import plot_run

    result = plot_run(args.run_dir, data_dir=args.data_dir, device=args.device, evaluate=args.evaluate)
    if args.json:
        d = result.to_dict()
        d.pop("test", None)
        if result.test is not None:
            d["test"] = {k: getattr(result.test, k) for k in ("accuracy", "loss", "count", "source")}
        print_json(d)
        return 0
    for name, path in result.files.items():
        print(f"wrote {path}")
    for name, why in result.notes.items():
        print(f"no {name}.png: {why}")
    return 0
