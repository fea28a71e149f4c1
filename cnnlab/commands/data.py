"""`cnnlab data`: look at datasets, fetch them, and profile the loader."""

from __future__ import annotations

from cnnlab.commands.common import add_json_flag, print_json
from cnnlab.text import format_table


def add_parser(sub):
    p = sub.add_parser("data", help="dataset information, download, and loader profile")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    for name, help_ in (("info", "shapes, sizes, classes and channel statistics"),
                        ("prepare", "download (if missing) and decode a dataset into the cache")):
        q = dsub.add_parser(name, help=help_)
        q.add_argument("dataset")
        q.add_argument("--data-dir")
        add_json_flag(q)
        q.set_defaults(func=run_info)
    q = dsub.add_parser("profile", help="images/s of each loading and augmentation stage")
    q.add_argument("--dataset", default="cifar10")
    q.add_argument("--data-dir")
    q.add_argument("--augment", default="crop+flip+cutout")
    q.add_argument("--batch-size", type=int, default=512)
    q.add_argument("--batches", type=int, default=40)
    q.add_argument("--device", default="cpu")
    add_json_flag(q)
    q.set_defaults(func=run_profile)


def run_info(args) -> int:
    from cnnlab.data import load_dataset

    d = load_dataset(args.dataset, args.data_dir)
    info = {"dataset": args.dataset, "shape": list(d.shape), "num_classes": d.num_classes, "classes": d.classes,
            "train": len(d.train), "val": len(d.val), "test": len(d.test), "mean": d.mean, "std": d.std,
            "test_label_counts": d.test.y.bincount(minlength=d.num_classes).tolist()}
    if args.json:
        print_json(info)
    else:
        for k, v in info.items():
            print(f"{k:18} {v}")
    return 0


def run_profile(args) -> int:
    from cnnlab.data import load_dataset
    from cnnlab.data.profile import profile_loader
    from cnnlab.device import resolve_device
    from cnnlab.errors import CnnlabError

    for flag, value in (("--batch-size", args.batch_size), ("--batches", args.batches)):
        if value < 1:
            raise CnnlabError(f"{flag} must be at least 1, got {value}")
    d = load_dataset(args.dataset, args.data_dir)
    rates = profile_loader(d.train, d.mean, d.std, args.batch_size, args.augment, resolve_device(args.device),
                           args.batches)
    if args.json:
        print_json({"dataset": args.dataset, "augment": args.augment, "batch_size": args.batch_size,
                    "images_per_s": rates})
        return 0
    total = rates["total"]
    label = {"total": "total (torch ops)", "fused": "fused CPU kernel (what the loader uses)"}
    print(format_table(["stage", "images/s", "share of torch-ops batch time"],
                       [[label.get(s, s), f"{r:,.0f}", "" if s in label else f"{100 * total / r:.1f}%"]
                        for s, r in rates.items()]))
    return 0
