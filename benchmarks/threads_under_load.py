"""LeNet-5 training throughput by thread setting, with and without a background load.

    CNNLAB_DATA_DIR=../shared/data python benchmarks/threads_under_load.py [--rounds 3] [--subset 2560]
        [--datasets mnist cifar10] [--settings default 1 2 ...] [--loads 0 2]

Each run is `cnnlab.train.train` (the real trainer: loader, warm-up, thread setting, steps) for one
epoch of `--subset` training images, batch 128, Adam, at most `--max-seconds` of training (a run
that slow stops early); images/s is the images trained over the training seconds (summary.json:
loader and steps, not evaluation). MNIST trains without
augmentation (the loader is one torch normalisation), CIFAR-10 with crop+flip (the fused Numba
loader runs every batch).

A setting is `THREADS [ENV=VALUE ...]`: THREADS is `default` (no --threads) or a number, the rest
environment variables for that worker, e.g. "2 OMP_WAIT_POLICY=passive". The default settings are
cnnlab's default, --threads 1, --threads 2 and the default before 2026-11-25 (OLD_DEFAULT below:
2 threads, the loader on Numba's OpenMP layer). Every (dataset, setting)
has its own worker process (threads are process-wide), started once and warmed up with one untimed
run; the runs are then interleaved: in each round, for each load, every worker runs once, in an
order rotated round by round. The load is N processes busy-looping in Python (N = `--loads`),
started before and stopped after each loaded block by this script, and each ends by itself after
`--load-timeout` seconds. Medians over the rounds; the ratio is each setting's median over the
first setting's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

USER_ENV = dict(os.environ)  # before importing cnnlab, which sets runtime defaults in os.environ
BATCH = 128
# cnnlab's default before 2026-11-25 on a 2-core machine: torch's default of 2 threads, and the fused
# loader on Numba's default threading layer, which picks OpenMP here.
OLD_DEFAULT = "2 NUMBA_THREADING_LAYER=omp"
AUGMENT = {"mnist": "none", "fashion-mnist": "none", "cifar10": "crop+flip", "cifar100": "crop+flip"}


# ---- worker: one process per (dataset, setting) --------------------------------------------------

def worker(args):
    import numba
    import torch
    from numba.np.ufunc import parallel as numba_parallel

    from cnnlab.config import TrainConfig
    from cnnlab.train.loop import train
    from cnnlab.train.hooks import Hook

    class Threads(Hook):  # what the trainer actually ran with, step by step
        def on_start(self, t):
            self.seen, self.images = set(), 0

        def on_step(self, t, loss, n):  # numba.get_num_threads() would start Numba's threads: only if started
            self.images += n
            self.seen.add((torch.get_num_threads(), numba.get_num_threads() if numba_parallel._is_initialized else None))

    threads = None if args.threads == "default" else int(args.threads)
    out_root = tempfile.mkdtemp(prefix="cnnlab-threads-")
    k = 0
    for line in sys.stdin:
        subset = int(line)
        k += 1
        config = TrainConfig(model="lenet5", dataset=args.dataset, data_dir=args.data_dir, subset=subset, val_size=500,
                             augment=AUGMENT.get(args.dataset, "none"), epochs=1, batch_size=BATCH, threads=threads,
                             max_seconds=args.max_seconds, out=os.path.join(out_root, f"run{k}"))
        hook = Threads()
        cpu = time.process_time()
        summary = train(config, quiet=True, hooks=[hook])
        layer = numba.threading_layer() if numba_parallel._is_initialized else None
        print(json.dumps({"images_per_s": hook.images / summary["train_seconds"], "threads_seen": sorted(hook.seen, key=str),
                          "numba_layer": layer, "cpu_seconds": time.process_time() - cpu}), flush=True)
        shutil.rmtree(config.out, ignore_errors=True)
    shutil.rmtree(out_root, ignore_errors=True)


# ---- the driver ------------------------------------------------------------------------------------

class Worker:
    def __init__(self, dataset, setting, args):
        threads, *env = shlex.split(setting)
        self.dataset, self.setting = dataset, setting
        e = dict(USER_ENV)
        e.update(kv.split("=", 1) for kv in env)
        cmd = [sys.executable, __file__, "--worker", "--dataset", dataset, "--threads", threads,
               "--max-seconds", str(args.max_seconds)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=e)

    def run(self, subset):
        self.p.stdin.write(f"{subset}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.dataset} '{self.setting}' died (exit code {self.p.wait()})")
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def busy_cpu_seconds():
    """CPU seconds the whole machine has spent busy (all processes, /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class Load:
    """`n` busy-looping processes, each ending by itself after `timeout` seconds at the latest;
    `cpu_seconds` is what they used."""

    def __init__(self, n, timeout):
        self.n, self.timeout, self.procs, self.cpu_seconds = n, timeout, [], 0.0

    def __enter__(self):
        code = f"import time\nend = time.monotonic() + {self.timeout}\nwhile time.monotonic() < end:\n    pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.n)]
        time.sleep(0.3 if self.n else 0)  # let them start spinning
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            _, _, usage = os.wait4(p.pid, 0)
            p.returncode = -9
            self.cpu_seconds += usage.ru_utime + usage.ru_stime


def loadavg():
    return round(os.getloadavg()[0], 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"])
    ap.add_argument("--settings", nargs="+", default=["default", "1", "2", OLD_DEFAULT])
    ap.add_argument("--loads", nargs="+", type=int, default=[0, os.cpu_count()],
                    help="background busy loops per block (default: none, then one per core)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--subset", type=int, default=2560, help="training images per run (one epoch)")
    ap.add_argument("--max-seconds", type=float, default=3.0, help="training time limit per run")
    ap.add_argument("--load-timeout", type=float, default=120.0, help="a busy loop ends by itself after this")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--threads", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    from cnnlab.envinfo import environment

    t_start = time.monotonic()
    workers = {(d, s): Worker(d, s, args) for d in args.datasets for s in args.settings}
    results = {key: {n: [] for n in args.loads} for key in workers}
    seen, layers, load_seen, other = {}, {}, {n: [] for n in args.loads}, {n: [] for n in args.loads}
    try:
        for w in workers.values():  # warm-up: compile or load the kernels, first-touch the data
            w.run(BATCH * 4)
        keys = list(workers)
        for r in range(args.rounds):
            for n in args.loads:
                t0, busy0, ours = time.monotonic(), busy_cpu_seconds(), 0.0
                with Load(n, args.load_timeout) as load:
                    order = keys[r % len(keys):] + keys[:r % len(keys)]
                    for key in order:
                        res = workers[key].run(args.subset)
                        ours += res["cpu_seconds"]
                        results[key][n].append(res["images_per_s"])
                        seen.setdefault(key, set()).update(map(tuple, res["threads_seen"]))
                        layers[key] = res["numba_layer"]
                    load_seen[n].append(loadavg())
                # cores kept busy by other processes than the trainers and the busy loops
                other[n].append(round((busy_cpu_seconds() - busy0 - ours - load.cpu_seconds) / (time.monotonic() - t0), 2))
            print(f"round {r + 1}/{args.rounds} done ({time.monotonic() - t_start:.0f} s)", file=sys.stderr)
    finally:
        for w in workers.values():
            w.close()

    env = environment()
    table = []
    for d in args.datasets:
        for n in args.loads:
            base = statistics.median(results[(d, args.settings[0])][n])
            for s in args.settings:
                v = results[(d, s)][n]
                table.append({"dataset": d, "load": n, "setting": s, "median_images_per_s": statistics.median(v),
                              "ratio": statistics.median(v) / base, "runs": [round(x) for x in v],
                              "torch_numba_threads_seen": sorted(seen[(d, s)], key=str), "numba_layer": layers[(d, s)]})
    report = {"machine": f"{env['cpu_model']}, {env['cpu_cores']} cores, torch {env['torch']}",
              "date": time.strftime("%Y-%m-%d"), "subset": args.subset, "rounds": args.rounds, "batch_size": BATCH,
              "load_average_after_each_block": load_seen,
              "other_cores_busy_per_block": other, "seconds": round(time.monotonic() - t_start), "table": table}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['machine']}; {args.rounds} rounds of {args.subset} images; {report['seconds']} s; "
          f"load average after each block: {load_seen}; cores busy with other work per block: {other}")
    print(f"{'dataset':10} {'load':>4}  {'setting':28} {'median img/s':>12} {'ratio':>6}  runs / (torch, numba) threads seen / layer")
    for row in table:
        print(f"{row['dataset']:10} {row['load']:>4}  {row['setting']:28} {row['median_images_per_s']:12,.0f} "
              f"{row['ratio']:6.2f}  {row['runs']} {row['torch_numba_threads_seen']} {row['numba_layer']}")


if __name__ == "__main__":
    main()
