"""`cnnlab evaluate RUN_DIR`: accuracy, loss, per-class accuracy and the confusion matrix."""

from __future__ import annotations

import json

from cnnlab.commands.common import add_json_flag, format_table, print_json
from cnnlab.io import atomic_write_text, write_csv


def add_parser(sub):
    p = sub.add_parser("evaluate", help="evaluate a trained run on its test (or validation) split",
                       description="Evaluate a run's best (or last) weights. Writes evaluation.json, "
                                   "per_class.csv and confusion_matrix.csv into the run directory (for "
                                   "--split val or train: evaluation-val.json, per_class-val.csv, ...).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--data-dir", help="where the dataset is, if not where the run found it")
    p.add_argument("--device", default="auto")
    add_json_flag(p)
    p.set_defaults(func=run)


def load_split(loaded, split, data_dir=None):
    from cnnlab.data import load_dataset

    cfg = loaded.config
    data = load_dataset(cfg.dataset, data_dir or cfg.data_dir, cfg.val_size, cfg.seed, cfg.subset)
    return getattr(data, split)


def run(args) -> int:
    from cnnlab.device import resolve_device
    from cnnlab.evaluate import evaluate
    from cnnlab.train.checkpoint import load_run

    loaded = load_run(args.run_dir, args.checkpoint)
    split = load_split(loaded, args.split, args.data_dir)
    device = resolve_device(args.device)
    d = loaded.data
    result = evaluate(loaded.model.to(device), split, d["mean"], d["std"], d["num_classes"],
                      loaded.config.loss or loaded.model.loss_name, device=device, tta=loaded.config.tta)
    result.update(split=args.split, checkpoint=args.checkpoint, classes=d["classes"])
    run_dir = loaded.run_dir
    classes = d["classes"]
    suffix = "" if args.split == "test" else f"-{args.split}"  # the test figures keep the plain names
    names = [f"evaluation{suffix}.json", f"per_class{suffix}.csv", f"confusion_matrix{suffix}.csv"]
    atomic_write_text(run_dir / names[0], json.dumps(result, indent=2) + "\n")
    write_csv(run_dir / names[1], ["class", "name", "accuracy", "count"],
              [[i, c, f"{a:.6f}", sum(result["confusion"][i])] for i, (c, a) in
               enumerate(zip(classes, result["per_class_accuracy"]))])
    write_csv(run_dir / names[2], ["true\\predicted"] + list(classes),
              [[c] + row for c, row in zip(classes, result["confusion"])])
    if args.json:
        print_json(result)
        return 0
    print(f"{args.split} accuracy {100 * result['accuracy']:.2f}%  loss {result['loss']:.4f}  "
          f"({result['count']} images, {args.checkpoint} checkpoint of {run_dir})")
    print(format_table(["class", "accuracy", "images"],
                       [[c, f"{100 * a:.2f}%", sum(r)] for c, a, r in
                        zip(classes, result["per_class_accuracy"], result["confusion"])]))
    print(f"wrote {run_dir / names[0]}, {names[1]}, {names[2]}")
    return 0
