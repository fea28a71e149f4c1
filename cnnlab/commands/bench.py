"""`cnnlab bench`: measured accuracy, latency and (optionally) training time per device and runtime.

    cnnlab bench runs/x --devices cpu,cuda --runtimes torch,onnxruntime   # RUN_DIR/bench.csv and .json
    cnnlab bench runs/x/exports/model.onnx --devices cpu --out onnx.csv

The work is `cnnlab.workflows.measure.bench`.
"""

from __future__ import annotations

from cnnlab.commands.common import add_json_flag, print_json
from cnnlab.text import format_table


def add_parser(sub):
    from cnnlab.workflows.export import all_runtime_names  # the registry, imported without torch

    p = sub.add_parser("bench", help="measure a run or model file per device and runtime: accuracy, latency, score",
                       description="Measure a trained run (or a model file from `cnnlab export`) on each device and "
                                   "runtime: test accuracy and loss, inference latency per image at batch 1 and at "
                                   "--batch-size (runtimes interleaved in rounds, medians), score = accuracy / "
                                   "seconds per image at batch 1, optionally the time to train 5 epochs. "
                                   "A run directory converts its model for each runtime in memory, as `cnnlab "
                                   "export` would, and by default measures every runtime installed here and names "
                                   "the fastest; a file runs on its own runtime (safetensors: on any). "
                                   "Writes RUN_DIR/bench.csv and bench.json for a run, and --out for either, "
                                   "merged with the rows they hold: a row per device, runtime, batch size and "
                                   "threads, replaced only by a new measurement of the same (a device that is "
                                   "missing here keeps its earlier figures, noted).")
    p.add_argument("run_dir", metavar="RUN_DIR|FILE", help="a run directory, or a model file from `cnnlab export`")
    p.add_argument("--devices", default="cpu,cuda",
                   help="comma-separated devices: cpu, cuda, cuda:N, mps, or auto (the devices this machine has); "
                        "default cpu,cuda. Every device missing here is an error")
    p.add_argument("--runtimes", help=f"comma-separated runtimes: auto, {', '.join(all_runtime_names())}. auto (the "
                                      "default for a run) is PyTorch and every deployable runtime installed here; "
                                      "a -int8 runtime quantizes the run's model as `cnnlab export --int8` does. "
                                      "A file runs on its own runtime by default")
    p.add_argument("--train", action="store_true", help="also time 5 training epochs of the run's config per device")
    p.add_argument("--batch-size", type=int, default=256, help="the larger batch for latency (default 256)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    p.add_argument("--threads", type=int, help="CPU threads for every runtime (default: PyTorch's default)")
    p.add_argument("--out", metavar="CSV", help="also write the rows here (and JSON beside it)")
    p.add_argument("--data-dir", help="where the dataset is, if not where the run found it")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from cnnlab.errors import CnnlabError
    from cnnlab.workflows.measure.bench import bench_files, bench_run, parse_devices, write_bench

    devices = parse_devices(args.devices)
    if args.out and Path(args.out).is_dir():
        raise CnnlabError(f"--out {args.out} is a directory: give the name of a CSV file to write")
    bench_files(args.run_dir, args.out)  # bench files it cannot merge into are an error before measuring
    rows = bench_run(args.run_dir, devices, args.batch_size, args.train, write=False, data_dir=args.data_dir,
                     runtimes=args.runtimes, rounds=args.rounds, threads=args.threads)
    if args.json:
        print_json(rows)
    else:
        print(format_bench(rows), flush=True)
    _, kept = write_bench(args.run_dir, rows, args.out)  # after printing: a read-only run still shows its figures
    for line in [] if args.json else kept:
        print(line)
    return 0


def format_bench(rows) -> str:
    from cnnlab.workflows.measure.bench import fastest

    def f(v, spec):
        return "-" if v is None else format(v, spec)

    head = ("device", "runtime", "best train acc/loss", "best val acc/loss", "train 5 ep (s)", "test acc",
            "test loss", "ms/img b1", "ms/img bN", "score")
    table, missing = [], {}
    for r in rows:
        if r["status"] != "ok":  # the reason goes below the table, once per device and reason
            table.append((r["device"], r.get("runtime") or "", "-", "-", "-", "-", "-", "-", "-", "-"))
            missing.setdefault((r["device"], r["status"]), []).append(r.get("runtime") or "torch")
            continue
        table.append((r["device"], r.get("runtime") or "torch",
                      f"{f(r.get('best_train_acc'), '.4f')}/{f(r.get('best_train_loss'), '.4f')}",
                      f"{f(r.get('best_val_acc'), '.4f')}/{f(r.get('best_val_loss'), '.4f')}",
                      f(r["train_seconds_5_epochs"], ".1f"), f(r["test_acc"], ".4f"), f(r["test_loss"], ".4f"),
                      f(r["latency_ms_batch1"], ".3f"), f"{f(r['latency_ms_per_image_batch'], '.4f')} (b{r['batch_size']})",
                      f(r["score"], ".1f")))
    threads = sorted({r["threads"] for r in rows if r.get("threads")})
    note = f"; CPU rows on {'/'.join(map(str, threads))} thread(s)" if threads else ""
    notes = [f"{device} ({', '.join(rts)}): {status}" for (device, status), rts in missing.items()]
    return "\n".join([format_table(head, table), *notes, *fastest(rows),
                      f"score = test accuracy / seconds per image at batch 1{note}"])
