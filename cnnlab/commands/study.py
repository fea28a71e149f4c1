"""`cnnlab study STUDY.yaml`: train several configurations over several seeds; one table, one set of plots.

    cnnlab study examples/optimizers.yaml --check    # the file checked, its runs listed
    cnnlab study examples/optimizers.yaml --seeds 3  # run (or continue); prints results.md

The work is `cnnlab.workflows.study`; the directory's files are `cnnlab.dirs.StudyDir`'s (docs/studies.md).
"""

from __future__ import annotations

import sys

from cnnlab.commands.common import add_json_flag, print_json


def add_parser(subparsers):
    p = subparsers.add_parser("study", help="compare training configurations over seeds: one table, overlaid curves",
                              description="Run every experiment of a study file over its seeds (skipping finished "
                                          "runs), then write results.md/.csv and overlaid training curves. "
                                          "See docs/studies.md for the file format.")
    p.add_argument("file", metavar="STUDY.yaml", help="the study file")
    p.add_argument("--seeds", type=int, help="run seeds 0..K-1 (overrides the file's `seeds:`)")
    p.add_argument("--out", help="study directory (default runs/study-<file name>)")
    p.add_argument("--check", action="store_true", help="only check the file and list the runs")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.dirs import RunDir
    from cnnlab.workflows.study import load_study, run_study

    study = load_study(args.file, seeds=args.seeds, out=args.out)
    if args.check:
        print(f"{args.file}: OK, {len(study.experiments)} experiments x {len(study.seeds)} seeds = "
              f"{len(study.runs)} runs into {study.out}")
        for r in study.runs:
            done = " (finished)" if RunDir(r.run_dir).finished() else ""
            print(f"  {r.experiment} seed {r.seed}: {r.run_dir}{done}")
        return 0
    if args.json:  # progress lines go to stderr so stdout is one JSON document
        results = run_study(study, log=lambda line: print(line, file=sys.stderr))
        print_json({name: {k: v for k, v in r.items() if k != "curves"} for name, r in results.items()})
        return 0
    run_study(study)
    print(study.dir.results_md.read_text(), end="")
    return 0
