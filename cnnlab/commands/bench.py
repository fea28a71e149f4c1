"""`cnnlab bench`: measured accuracy, latency and (optionally) training time of a run per device."""

from __future__ import annotations

from cnnlab.commands.common import add_json_flag, print_json


def add_parser(sub):
    p = sub.add_parser("bench", help="measure a run on each device: test accuracy, latency, training time",
                       description="Measure a trained run on each device: test accuracy and loss, inference "
                                   "latency per image at batch 1 and at --batch-size, optionally the time to "
                                   "train 5 epochs. Writes RUN_DIR/bench.csv and bench.json.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `cnnlab train`")
    p.add_argument("--devices", default="cpu,cuda", help="comma-separated devices (default cpu,cuda)")
    p.add_argument("--train", action="store_true", help="also time 5 training epochs of the run's config per device")
    p.add_argument("--batch-size", type=int, default=256, help="the larger batch for latency (default 256)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.cost.bench import bench_run, format_bench
    from cnnlab.errors import CnnlabError

    devices = [d.strip().lower() for d in args.devices.split(",") if d.strip()]
    if not devices:
        raise CnnlabError("--devices is empty: give e.g. cpu,cuda")
    rows = bench_run(args.run_dir, devices, args.batch_size, args.train)
    if args.json:
        print_json(rows)
    else:
        print(format_bench(rows))
    return 0
