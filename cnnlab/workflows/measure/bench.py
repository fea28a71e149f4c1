"""Measured figures of a trained run (or an exported model file) per device and runtime.

    rows = bench_run("runs/x", devices=("cpu", "cuda"), runtimes=("torch", "onnxruntime"))
    rows = bench_run("runs/x/exports/model.onnx", devices=("cpu",))    # a file, on its own runtime
    latency_per_image(model, x, torch.device("cpu"))                   # seconds per image of any module

Per device and runtime (PyTorch eager `torch`, and each exported format's runtime in the format registry,
cnnlab.workflows.export: `onnxruntime`, `torchscript`, `keras`, `openvino`): (optionally)
the time to train the run's configuration for 5 epochs, test accuracy and loss on that runtime, and
inference latency per image at batch 1 and at a larger batch. Every runtime is timed the same way:
its input is placed once (on the GPU for CUDA, with ONNX Runtime's I/O binding), then each timed call
is one synchronous pass (the GPU synchronised after it), after warm-up calls; runtimes are measured
in interleaved rounds, so a shared machine's load falls on all of them alike, and the figure is the
median call. ONNX Runtime gets as many intra-op threads as PyTorch. Score = test accuracy / latency
per image at batch 1 (in seconds).

A run directory runs on any runtime: the model is converted in memory with the code `cnnlab export`
uses. An exported file runs on its own runtime (a safetensors file, which rebuilds the PyTorch model,
on any).

Results accumulate: `write_bench` merges a bench's rows into the rows the run's bench.csv/bench.json
(and `out`) already hold, a row per device, runtime, batch size and threads (`merge_bench`). A device
or runtime that cannot run here never replaces figures measured earlier: they stay, and their `notes`
say when it was found unavailable and why. A bench whose every device is missing, or that measures
nothing, is a one-line error that writes nothing. `--devices auto` is the devices this machine has.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.device import synchronize
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import evaluate_logits, predict_logits
from cnnlab.io import atomic_write_text, write_csv
from cnnlab.dirs import RunDir, load_run
from cnnlab.dirs.run import read_bench_rows
from cnnlab.workflows.export import export_metadata, load_for_runtime, predictor_for_model, prepare
from cnnlab.workflows.export import (FILE_RUNTIMES, INT8, NATIVE_RUNTIME, all_runtime_names, auto_runtimes, file_split,
                                    read_metadata, sniff_format, split_runtime)
from cnnlab.workflows.export.quantize import calibration_images

# new columns go at the end, so files read by position keep their meaning
COLUMNS = ("device", "status", "best_train_acc", "best_train_loss", "best_val_acc", "best_val_loss",
           "train_seconds_5_epochs", "test_acc", "test_loss", "latency_ms_batch1", "batch_size",
           "latency_ms_per_image_batch", "score", "runtime", "threads", "source", "measured_at", "notes")
DEFAULT_ROUNDS = 7


def device_unavailable(name: str) -> str | None:
    """None when the device can run, else why not."""
    if name == "cpu":
        return None
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return "PyTorch sees no CUDA device"
        idx = int(name.split(":")[1]) if ":" in name else 0
        if idx >= torch.cuda.device_count():
            return f"only {torch.cuda.device_count()} CUDA device(s)"
        return None
    if name == "mps":
        return None if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "no MPS device"
    raise CnnlabError(f"unknown device '{name}' in --devices: use auto, cpu, cuda, cuda:N or mps, separated by commas")


def parse_devices(devices) -> tuple:
    """The devices to bench, in order, once each: names (or a comma-separated string); `auto` is the CPU
    and every accelerator this machine has. An unknown name is an error."""
    if isinstance(devices, str):
        devices = devices.split(",")
    names = []
    for d in (str(d).strip().lower() for d in devices):
        if d == "auto":
            names += [n for n in ("cpu", "cuda", "mps") if device_unavailable(n) is None]
        elif d:
            device_unavailable(d)  # an unknown device name is an error before any work
            names.append(d)
    if not names:
        raise CnnlabError("--devices is empty: give e.g. cpu,cuda or auto")
    return tuple(dict.fromkeys(names))


def check_devices(devices) -> dict:
    """{device: why it cannot run here} for the missing ones; every one missing is an error."""
    missing = {d: why for d in devices if (why := device_unavailable(d))}
    if missing and len(missing) == len(devices):
        what = ", ".join(missing)
        why = "; ".join(missing.values()) if len(set(missing.values())) == 1 else \
            "; ".join(f"{d}: {w}" for d, w in missing.items())
        raise CnnlabError(f"{what} {'is' if len(missing) == 1 else 'are'} not available on this machine ({why}): "
                          "bench on --devices cpu (or auto: the devices this machine has), or on a machine with "
                          f"{what}; nothing was written")
    return missing


@torch.no_grad()
def latency_per_image(model, x, device, repeats: int | None = None, warmup: int = 5) -> float:
    """Median seconds per image of model(x) on `device`."""
    model = model.to(device).eval()
    x = x.to(device)
    for _ in range(warmup):
        model(x)
    synchronize(device)
    if repeats is None:  # enough runs for a stable median, within about a second
        t0 = time.perf_counter()
        model(x)
        synchronize(device)
        repeats = int(min(200, max(10, 1.0 / max(time.perf_counter() - t0, 1e-6))))
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        model(x)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / x.shape[0]


def _best_from_metrics(run: RunDir) -> dict:
    rows = run.read_metrics()
    best = {}
    for key, pick in (("train_acc", max), ("train_loss", min), ("val_acc", max), ("val_loss", min)):
        vals = [r[key] for r in rows if key in r]
        if vals:
            best[f"best_{key}"] = pick(vals)
    return best


def _train_seconds(config, device: str) -> float:
    from cnnlab.train.loop import train

    cfg = config
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        cfg = dataclasses.replace(cfg, epochs=5, device=device, early_stop=None, out=str(Path(tmp) / "run"))
        t0 = time.perf_counter()
        train(cfg, quiet=True)
        return time.perf_counter() - t0


def measure_interleaved(fns: dict, rounds: int = DEFAULT_ROUNDS, round_seconds: float = 0.15, warmup: int = 3) -> dict:
    """Median seconds per call of each zero-argument function, measured in interleaved rounds.

    Each function is warmed up, then every round times each function's calls one by one (as many
    as fit in about `round_seconds`, at least one), the order reversed every other round; a
    machine's changing load then reaches every function alike."""
    if rounds < 1:
        raise CnnlabError(f"--rounds must be at least 1, got {rounds}")
    reps = {}
    for key, fn in fns.items():
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        fn()
        reps[key] = int(min(200, max(1, round_seconds / max(time.perf_counter() - t0, 1e-6))))
    times = {key: [] for key in fns}
    keys = list(fns)
    for r in range(rounds):
        for key in (keys if r % 2 == 0 else keys[::-1]):
            fn = fns[key]
            for _ in range(reps[key]):
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    return {key: statistics.median(v) for key, v in times.items()}


def parse_runtimes(runtimes) -> tuple[tuple, set]:
    """(runtime names in order, once each; the ones `auto` chose): `auto` is PyTorch eager and every
    deployable runtime installed here (`auto_runtimes`)."""
    if isinstance(runtimes, str):
        runtimes = [r.strip().lower() for r in runtimes.split(",") if r.strip()]
    names, auto = [], set()
    for r in runtimes:
        if r == "auto":
            auto |= set(auto_runtimes()) - set(names)
            names += auto_runtimes()
        else:
            names.append(r)
    names = tuple(dict.fromkeys(names))  # in order, once each
    if not names:
        raise CnnlabError("--runtimes is empty: give e.g. auto, or torch,onnxruntime,openvino-int8")
    for r in names:
        if r not in all_runtime_names():
            raise CnnlabError(f"unknown runtime '{r}' in --runtimes: choose from auto, {', '.join(all_runtime_names())}")
    return names, auto


def fastest(rows: list[dict]) -> list[str]:
    """One line per device: the measured runtime with the lowest latency at batch 1 and at the larger batch."""
    lines = []
    for device in dict.fromkeys(r["device"] for r in rows):
        ok = [r for r in rows if r["device"] == device and r["status"] == "ok" and r.get("latency_ms_batch1")]
        if len(ok) < 2:
            continue
        b1 = min(ok, key=lambda r: r["latency_ms_batch1"])
        bn = min(ok, key=lambda r: r["latency_ms_per_image_batch"])
        slow = max(ok, key=lambda r: r["latency_ms_batch1"])
        lines.append(f"fastest on {device}: {b1['runtime']} at batch 1 ({b1['latency_ms_batch1']:.3f} ms/img, "
                     f"{slow['latency_ms_batch1'] / b1['latency_ms_batch1']:.1f}x {slow['runtime']}), "
                     f"{bn['runtime']} at batch {bn['batch_size']} ({bn['latency_ms_per_image_batch']:.4f} ms/img)")
    return lines


def bench_run(run_dir, devices=("cpu", "cuda"), batch_size: int = 256, do_train: bool = False, write: bool = True,
              data_dir=None, runtimes=None, rounds: int = DEFAULT_ROUNDS, out=None, threads: int | None = None) -> list[dict]:
    """One row per device and runtime. `run_dir` is a run directory or a file `cnnlab export` wrote.
    `threads` sets the CPU threads of every runtime (default: PyTorch's). With `write`, a run's rows are
    merged into RUN_DIR/bench.csv and bench.json (and into `out`, a CSV path, when given): `write_bench`."""
    if batch_size < 1:
        raise CnnlabError(f"--batch-size must be at least 1, got {batch_size}")
    if rounds < 1:
        raise CnnlabError(f"--rounds must be at least 1, got {rounds}")
    if threads is not None and threads < 1:
        raise CnnlabError(f"--threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bench(run_dir, devices, batch_size, do_train, write, data_dir, runtimes, rounds, out)
    finally:
        torch.set_num_threads(before)


def _bench(run_dir, devices, batch_size, do_train, write, data_dir, runtimes, rounds, out) -> list[dict]:
    devices = parse_devices(devices)
    check_devices(devices)
    if write:
        bench_files(run_dir, out)  # a damaged bench file is an error before any work, not after it
    is_run = RunDir(run_dir).is_run()
    if is_run:
        runtimes, auto = parse_runtimes(runtimes or ("auto",))
        run = load_run(run_dir)
        meta = export_metadata(run, None)
        test = run.split("test", data_dir)
        best = _best_from_metrics(run.dir)
        model, source = run.model, str(run.run_dir)
        calibration = None
        if any(split_runtime(r)[1] for r in runtimes):  # int8 as `cnnlab export --int8` makes it
            calibration, _ = calibration_images(run, data_dir=data_dir)

        def make(runtime, device):
            return predictor_for_model(model, meta, runtime, device, source, calibration=calibration)
    else:
        fmt = sniff_format(run_dir)
        _, meta = read_metadata(run_dir)
        own = NATIVE_RUNTIME[fmt] + (INT8 if meta.get("quantization") else "")
        runtimes, auto = parse_runtimes(runtimes or (own,))
        if meta.get("quantization"):
            auto = set()
            if runtimes != (own,):
                raise CnnlabError(f"{run_dir} is an int8 {fmt} file, which runs on {own} only: give the run directory "
                                  "to compare runtimes")
            runtimes = (NATIVE_RUNTIME[fmt],)  # loaded on its own runtime; its rows say int8
        runtimes = tuple(r for r in runtimes if r not in auto or r in FILE_RUNTIMES[fmt])
        bad = [r for r in runtimes if r not in FILE_RUNTIMES[fmt]]
        if bad:
            raise CnnlabError(f"{run_dir} is a {fmt} file, which runs on {', '.join(FILE_RUNTIMES[fmt])} only, not "
                              f"{bad[0]}: give the run directory (or its safetensors export) to compare runtimes")
        if do_train:
            raise CnnlabError("--train needs a run directory (a model file has no training configuration to repeat)")
        test = file_split(meta, "test", data_dir)
        best = {k: v for k, v in (meta.get("figures") or {}).items() if k.startswith("best_") and k[5:] in
                ("train_acc", "train_loss", "val_acc", "val_loss")}
        source = str(run_dir)

        def make(runtime, device):
            return load_for_runtime(run_dir, runtime, device)
    if len(test.y) == 0:
        raise CnnlabError(f"the test split of {meta['dataset']['name']} is empty: nothing to benchmark")
    images = test.x[:batch_size]
    rows, preds = [], {}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for name in devices:
        why = device_unavailable(name)
        train_s = None
        if do_train and not why:
            train_s = _train_seconds(run.config, name)
        for runtime in runtimes:
            row = {c: None for c in COLUMNS}
            row.update(device=name, **best, runtime=runtime, source=source, train_seconds_5_epochs=train_s,
                       measured_at=now)
            rows.append(row)
            if why:
                row["status"] = f"unavailable: {why}"
                continue
            try:
                pred = make(runtime, torch.device(name))
            except CnnlabError as e:
                if not is_run and runtime == NATIVE_RUNTIME[fmt] and name == "cpu":
                    raise  # a file that does not load is an error, not a row
                if runtime in auto:  # `auto` measures what runs here: a runtime this device lacks is no row
                    rows.pop()
                    continue
                row["status"] = f"unavailable: {e}"
                continue
            row["runtime"] = pred.label
            logits = predict_logits(pred, test, *pred.norm(), device=pred.input_device)
            res = evaluate_logits(logits, test.y, int(meta["num_classes"]), meta.get("loss") or "softmax")
            row.update(status="ok", test_acc=res["accuracy"], test_loss=res["loss"], batch_size=int(images.shape[0]),
                       threads=pred.threads if pred.device.type == "cpu" else None)
            preds[len(rows) - 1] = pred
    if not preds:
        raise CnnlabError("nothing could be measured (" + "; ".join(f"{r['device']} {r['runtime']}: {r['status']}"
                                                                   for r in rows) + "); nothing was written")
    fns = {}
    for i, pred in preds.items():
        x = prepare(images, *pred.norm())
        fns[(i, 1)] = pred.runner(x[:1])
        fns[(i, len(x))] = pred.runner(x)
    medians = measure_interleaved(fns, rounds) if fns else {}
    for i in preds:
        row = rows[i]
        lat1 = medians[(i, 1)]
        row.update(latency_ms_batch1=lat1 * 1e3,
                   latency_ms_per_image_batch=medians[(i, row["batch_size"])] / row["batch_size"] * 1e3,
                   score=row["test_acc"] / lat1)
    for pred in preds.values():
        pred.close()
    if write:
        write_bench(run_dir, rows, out)
    return rows


def bench_files(target, out=None) -> list[tuple]:
    """(CSV path, JSON path, the rows there, whether rows of several sources share them, write(rows)) for
    each place a bench of `target` writes: the run's bench.csv/bench.json (for a run) and `out` (a CSV;
    JSON beside it). A JSON file there that does not hold bench rows is a one-line error."""
    places = []
    if RunDir(target).is_run():
        rd = RunDir(target)
        places.append((rd.bench_csv, rd.bench_json, rd.read_bench(), False,
                       lambda rows: rd.write_bench(rows, COLUMNS)))
    if out is not None:
        out = Path(out)

        def write_out(rows):
            write_csv(out, COLUMNS, [[r.get(c, "") for c in COLUMNS] for r in rows])
            atomic_write_text(out.with_suffix(".json"), json.dumps(rows, indent=2, default=str) + "\n")

        places.append((out, out.with_suffix(".json"), read_bench_rows(out.with_suffix(".json")), True, write_out))
    return places


def merge_bench(old: list[dict], new: list[dict], by_source: bool = False) -> tuple[list[dict], list[str]]:
    """(rows, what was kept): `old` with `new` merged in. A row is one device, runtime, batch size and thread
    count (and source, `by_source`): a measured new row replaces the old one in place (keeping a training
    time the new bench did not measure) or is added; an unavailable one replaces only an unavailable
    row, never measured figures, which stay with a note of when and why the device was unavailable."""
    def group(r):
        return (str(Path(r.get("source") or "").resolve()) if by_source else None, r.get("device"),
                r.get("runtime") or "torch")

    def same(r):
        return group(r) + (r.get("batch_size"), r.get("threads"))

    rows, kept = [dict(r) for r in old], []
    for r in new:
        g = group(r)
        measured = [o for o in rows if group(o) == g and o.get("status") == "ok"]
        if r["status"] != "ok" and measured:
            for o in measured:
                o["notes"] = (f"{r['status']} (bench of {r.get('measured_at')}); these figures are from "
                              f"{o.get('measured_at') or 'an earlier bench'}")
                kept.append(f"{o['device']} ({o.get('runtime') or 'torch'}, batch {o.get('batch_size')}): kept the "
                            f"figures measured {'at ' + o['measured_at'] if o.get('measured_at') else 'earlier'}")
            continue
        if r["status"] == "ok":
            hits = [i for i, o in enumerate(rows) if same(o) == same(r) or (group(o) == g and o.get("status") != "ok")]
            earlier = next((rows[i] for i in hits if rows[i].get("status") == "ok"), None)
            if earlier and r.get("train_seconds_5_epochs") is None:
                r = {**r, "train_seconds_5_epochs": earlier.get("train_seconds_5_epochs")}
        else:
            hits = [i for i, o in enumerate(rows) if group(o) == g]
        if hits:
            rows[hits[0]] = r
            rows = [o for i, o in enumerate(rows) if i not in hits[1:]]
        else:
            rows.append(r)
    return rows, kept


def write_bench(target, rows: list[dict], out=None) -> tuple[list[str], list[str]]:
    """(files written, what was kept): `rows` merged (`merge_bench`) into the bench files of `target`, a run
    directory (RUN_DIR/bench.csv and bench.json), and into `out` (a CSV path; JSON beside it), each atomically."""
    written, kept = [], []
    for csv_path, json_path, old, by_source, write in bench_files(target, out):
        merged, note = merge_bench(old, rows, by_source)
        write(merged)
        kept += [f"{line} in {json_path}" for line in note]
        written += [str(csv_path), str(json_path)]
    return written, kept


# ---- the fastest runtime, for predict ---------------------------------------------------------

PROBE_SECONDS = 2.0  # converting to the other runtimes, imports included: 1.3-2.5 s for LeNet-5, ResNet-20, FastNet


def choose_runtime(model, meta: dict, device, source: str, images, bench_rows=(), work: int = 0) -> tuple:
    """(Predictor, why): the model on the fastest float32 runtime installed here (`auto_runtimes`; int8 only
    through its own export, which checks its accuracy), for `work` images to predict. The fastest measured
    by `cnnlab bench` on this device and thread count at its larger batch when `bench_rows` (the run's
    bench.json) hold two or more such runtimes. Else PyTorch is timed on `images` (uint8, the probe) first:
    when the whole job would take it less than converting to the others costs (PROBE_SECONDS), it stays on
    PyTorch; otherwise each runtime is converted and timed on the probe (3 interleaved rounds)."""
    device = torch.device(device)
    threads = torch.get_num_threads() if device.type == "cpu" else None
    candidates = auto_runtimes()
    measured = {r["runtime"]: r["latency_ms_per_image_batch"] for r in bench_rows
                if r.get("status") == "ok" and r.get("device") == str(device) and r.get("runtime") in candidates
                and r.get("threads") == threads and r.get("latency_ms_per_image_batch")}
    if len(measured) >= 2:
        best = min(measured, key=measured.get)
        pred = predictor_for_model(model, meta, best, device, source)
        return pred, (f"the fastest in bench.json on {device}: " +
                      ", ".join(f"{rt} {ms:.4f}" for rt, ms in sorted(measured.items(), key=lambda kv: kv[1])) +
                      " ms/img")
    preds = {"torch": predictor_for_model(model, meta, "torch", device, source)}
    if len(images) == 0 or work == 0:
        return preds["torch"], "nothing to predict"
    x = prepare(images, *preds["torch"].norm())
    eager = measure_interleaved({"torch": preds["torch"].runner(x.to(device))}, rounds=1, round_seconds=0.05,
                                warmup=1)["torch"] / len(images)
    if eager * work < PROBE_SECONDS:
        return preds["torch"], (f"PyTorch takes about {eager * work:.1f} s for the {work} images, less than trying "
                                f"the other runtimes costs (about {PROBE_SECONDS:g} s)")
    for rt in candidates:
        if rt in preds:
            continue
        try:
            preds[rt] = predictor_for_model(model, meta, rt, device, source)
        except CnnlabError:
            continue  # a runtime that cannot run this model or device is not a candidate
    if len(preds) == 1:
        return next(iter(preds.values())), f"the only runtime here for {device}"
    x = {rt: prepare(images, *p.norm()).to(p.input_device) for rt, p in preds.items()}
    secs = measure_interleaved({rt: p.runner(x[rt]) for rt, p in preds.items()}, rounds=3, round_seconds=0.05,
                               warmup=1)
    best = min(secs, key=secs.get)
    for rt, p in preds.items():
        if rt != best:
            p.close()
    per = {rt: s / len(images) * 1e3 for rt, s in secs.items()}
    return preds[best], (f"the fastest of a {len(images)}-image probe on {device}: " +
                         ", ".join(f"{rt} {ms:.4f}" for rt, ms in sorted(per.items(), key=lambda kv: kv[1])) + " ms/img")
