"""`cnnlab bench`: measured accuracy, latency and (optionally) training time of a run per device."""

from __future__ import annotations

from cnnlab.commands.common import add_json_flag, format_table, print_json


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
    from cnnlab.workflows.bench import bench_run
    from cnnlab.errors import CnnlabError

    devices = [d.strip().lower() for d in args.devices.split(",") if d.strip()]
    if not devices:
        raise CnnlabError("--devices is empty: give e.g. cpu,cuda")
    from cnnlab.rundir import RunDir
    from cnnlab.workflows.bench import COLUMNS

    rows = bench_run(args.run_dir, devices, args.batch_size, args.train, write=False)
    if args.json:
        print_json(rows)
    else:
        print(format_bench(rows), flush=True)
    RunDir(args.run_dir).write_bench(rows, COLUMNS)  # after printing: a read-only run still shows its figures
    return 0


def format_bench(rows) -> str:
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    head = ("device", "best train acc/loss", "best val acc/loss", "train 5 ep (s)", "test acc", "test loss",
            "ms/img b1", "ms/img bN", "score")
    table = []
    for r in rows:
        if r["status"] != "ok":
            table.append((r["device"], r["status"], "", "", "", "", "", "", ""))
            continue
        table.append((r["device"], f"{f(r.get('best_train_acc'), '.4f')}/{f(r.get('best_train_loss'), '.4f')}",
                      f"{f(r.get('best_val_acc'), '.4f')}/{f(r.get('best_val_loss'), '.4f')}",
                      f(r["train_seconds_5_epochs"], ".1f"), f(r["test_acc"], ".4f"), f(r["test_loss"], ".4f"),
                      f(r["latency_ms_batch1"], ".3f"), f"{f(r['latency_ms_per_image_batch'], '.4f')} (b{r['batch_size']})",
                      f(r["score"], ".1f")))
    return format_table(head, table) + "\nscore = test accuracy / seconds per image at batch 1"
