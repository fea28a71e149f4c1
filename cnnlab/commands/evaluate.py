"""`cnnlab evaluate RUN_DIR|MODEL_FILE`: accuracy, loss, per-class accuracy and the confusion matrix.

    cnnlab evaluate runs/x --split val            # writes evaluation-val.json and its CSVs into the run
    cnnlab evaluate runs/x/exports/model.onnx     # an exported file on its runtime (nothing written)

The work is `cnnlab.workflows.measure.evaluate`.
"""

from __future__ import annotations

import sys

from cnnlab.commands.common import add_json_flag, print_json
from cnnlab.text import format_table


def add_parser(sub):
    p = sub.add_parser("evaluate", help="evaluate a trained run on its test (or validation) split",
                       description="Evaluate a run's best (or last) weights. Writes evaluation.json, "
                                   "per_class.csv and confusion_matrix.csv into the run directory (for "
                                   "--split val or train: evaluation-val.json, per_class-val.csv, ...). An exported "
                                   "model file (cnnlab export) is evaluated in its runtime and nothing is written.")
    p.add_argument("run_dir", metavar="RUN_DIR|MODEL_FILE")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--checkpoint", choices=["best", "last"],
                   help="a run directory's best (default) or last weights; not for a model file")
    p.add_argument("--data-dir", help="where the dataset is, if not where the run found it")
    p.add_argument("--device", default="auto")
    p.add_argument("--dataset", help="for a model file: evaluate on another dataset of the same image shape whose "
                                     "classes are named as the model's (any order, or some of them)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.dirs import RunDir
    from cnnlab.workflows.measure.evaluate import evaluate_file, evaluate_run, is_exported_file, refuse_checkpoint

    if is_exported_file(args.run_dir):
        refuse_checkpoint(args.run_dir, args.checkpoint)
        result = evaluate_file(args.run_dir, args.split, args.data_dir, args.device, args.dataset)
        if args.json:
            print_json(result)
        else:
            _print(result, f"{result['model_file']} on {result['runtime']}")
        return 0
    if args.dataset:
        from cnnlab.errors import CnnlabError

        raise CnnlabError("--dataset applies to an exported model file; a run directory evaluates on its own dataset")
    checkpoint = args.checkpoint or "best"
    # figures first, files second: a read-only run directory still shows the result
    result = evaluate_run(args.run_dir, args.split, checkpoint, args.data_dir, args.device, write=False)
    run = RunDir(args.run_dir)
    result["files"] = [str(p) for p in run.evaluation_files(args.split)]
    if args.json:
        print_json(result)
        run.write_evaluation(args.split, result, result["classes"])
        return 0
    classes = result["classes"]
    _print(result, f"{checkpoint} checkpoint of {args.run_dir}")
    sys.stdout.flush()
    run.write_evaluation(args.split, result, classes)
    print(f"wrote {', '.join(result['files'])}")
    return 0


def _print(result: dict, what: str):
    print(f"{result['split']} accuracy {100 * result['accuracy']:.2f}%  loss {result['loss']:.4f}  "
          f"({result['count']} images, {what})")
    # a class the dataset has no images of (a folder holding some of the model's classes) shows "-"
    print(format_table(["class", "accuracy", "images"],
                       [[c, f"{100 * a:.2f}%" if sum(r) else "-", sum(r)] for c, a, r in
                        zip(result["classes"], result["per_class_accuracy"], result["confusion"])]))
