"""`cnnlab predict RUN_DIR|FILE`: a leaderboard file of predicted labels.

predictions.csv: a header `id,label`, then one row per image of the split in dataset order;
`id` counts from 0 and `label` is the predicted class index (see `classes` in the checkpoint,
or the run's evaluation.json, for the names). `--names` writes class names instead.

A run directory predicts on the fastest float32 runtime installed here (PyTorch, TorchScript, ONNX
Runtime, OpenVINO: the fastest in RUN_DIR/bench.json when `cnnlab bench` measured them on this device,
else a short probe) and says which; --runtime NAME picks one.

FILE is a model written by `cnnlab export` (.onnx on ONNX Runtime, TorchScript, .keras on Keras,
.safetensors on PyTorch): it predicts on its recorded dataset, or on --dataset (same image shape,
classes named as the model's), without the run directory, and writes ./predictions.csv unless --out
says otherwise. Labels are always the model's class indices (or names), whatever order the dataset
lists its classes in.
"""

from __future__ import annotations

from cnnlab.commands.common import add_json_flag, print_json


def add_parser(sub):
    from cnnlab.workflows.export import RUNTIMES  # the registry, imported without torch

    p = sub.add_parser("predict", help="write predictions.csv (id,label) for a leaderboard",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR|FILE", help="a run directory, or a model file from `cnnlab export`")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--out", help="output CSV (default RUN_DIR/predictions.csv; for a FILE, ./predictions.csv)")
    p.add_argument("--checkpoint", choices=["best", "last"],
                   help="a run directory's best (default) or last weights; not for a FILE")
    p.add_argument("--names", action="store_true", help="write class names instead of class indices")
    p.add_argument("--data-dir", help="where the dataset is, if not where the run found it")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (a FILE: where its runtime can run)")
    p.add_argument("--runtime", default="auto", metavar="NAME",
                   help="auto (default: a run directory predicts on the fastest runtime installed here, measured "
                        "by `cnnlab bench` or a short probe, and says which; a FILE on its own runtime), or one of "
                        f"{', '.join(RUNTIMES)}")
    p.add_argument("--dataset", help="FILE only: predict on this dataset instead of the recorded one, e.g. "
                                     "imagefolder:PATH (same image shape, classes named as the model's)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from cnnlab.errors import CnnlabError
    from cnnlab.workflows.measure.evaluate import predict_run

    if args.out and Path(args.out).is_dir():
        raise CnnlabError(f"--out {args.out} is a directory: give the name of a CSV file to write")
    info = predict_run(args.run_dir, args.split, args.checkpoint, args.out, args.names, args.data_dir, args.device,
                       args.dataset, args.runtime)
    if args.json:
        print_json(info)
    else:
        why = f": {info['runtime_choice']}" if info.get("runtime_choice") else ""
        on = f" ({info['runtime']} on {info['device']}{why})" if "runtime" in info else ""
        print(f"wrote {info['rows']} predictions for the {args.split} split to {info['predictions']}{on}")
    return 0
