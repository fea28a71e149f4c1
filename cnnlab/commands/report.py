"""`cnnlab report RUN_DIR [RUN_DIR ...]`: one self-contained HTML (or Markdown) report."""

from __future__ import annotations

from cnnlab.commands.common import add_json_flag, print_json


def add_parser(sub):
    p = sub.add_parser("report", help="write an HTML report of one or more runs",
                       description="One run: RUN_DIR/report.html with its result, curves, filters, confusion matrix, "
                                   "per-class accuracy, mistakes, layer cost table, score and bench results, "
                                   "configuration and hardware. Several runs, a study directory or a folder of runs: "
                                   "a comparison (./comparison.html, or DIR/report.html for one study or folder) "
                                   "with a sortable "
                                   "table and overlaid curves. The HTML embeds its images and needs no network. "
                                   "Whatever a run lacks is noted where it would have been.")
    p.add_argument("paths", metavar="RUN_DIR", nargs="+", help="run directories, study directories, or folders holding run directories")
    p.add_argument("--out", metavar="FILE", help="the report file (default: see above)")
    p.add_argument("--format", dest="fmt", choices=["html", "md"], default="html",
                   help="html (default; self-contained) or md (Markdown, with its PNGs beside it)")
    p.add_argument("--data-dir", help="where the dataset is, if not where the run found it")
    p.add_argument("--device", default="cpu", help="device for the test evaluation (default cpu)")
    p.add_argument("--no-eval", dest="evaluate", action="store_false",
                   help="skip the test evaluation of a single run (no confusion matrix or mistakes, unless "
                        "evaluation.json has one)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.workflows.report import report

    rep = report(args.paths, out=args.out, fmt=args.fmt, data_dir=args.data_dir, device=args.device,
                 evaluate=args.evaluate)
    if args.json:
        print_json(rep.to_dict())
        return 0
    for note in rep.notes:
        print(f"note: {note}")
    print(f"wrote {rep.path}" + (f" and {len(rep.files) - 1} PNG files beside it" if len(rep.files) > 1 else ""))
    return 0
