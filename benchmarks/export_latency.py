"""CPU inference latency of exported models: every runtime, float32 and int8, side by side.

    python benchmarks/export_latency.py [--models lenet5,resnet20,fastnet] [--threads N] [--rounds 7]
        [--batches 1,256] [--runtimes torch,torchscript,onnxruntime,openvino,onnxruntime-int8,openvino-int8]

Each model is converted exactly as `cnnlab export` / `cnnlab bench` convert it (TorchScript traced,
ONNX through torch.onnx's TorchScript-based exporter at opset 17 into an ONNX Runtime session with as
many intra-op threads as PyTorch, OpenVINO IR compiled for its CPU device in f32; a `-int8` runtime
quantizes it first as `cnnlab export --int8` does, on 300 calibration images), then every (model,
runtime, batch) call is timed the way `cnnlab bench` times it: input placed once, warm-up calls, then
interleaved rounds, so the machine's load falls on every runtime alike; the figure is the median call,
in ms per image. LeNet-5 runs on MNIST-sized input (1x28x28), the others on CIFAR-10 (3x32x32);
weights are freshly initialised and calibration images random (latency depends on neither; int8
accuracy is benchmarks/int8_accuracy.py's). `vs ORT` is the fastest runtime's latency over ONNX
Runtime float32's. A one-layer model (a 1x1 convolution on 1x28x28, `call`) shows each runtime's cost
per call, which no model can run below. The FLOP floor is the model's FLOPs per image (2 x MACs) over
the CPU's peak, --peak-gflops (default 2.3 GHz x 64 float32 FLOP/cycle per core: AVX-512, two FMA units).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from cnnlab.envinfo import environment
from cnnlab.models import create_model
from cnnlab.models.summary import count_macs
from cnnlab.workflows.measure.bench import measure_interleaved
from cnnlab.workflows.export import model_metadata, predictor_for_model

SHAPES = {"lenet5": (1, 28, 28), "call": (1, 28, 28)}  # the rest: CIFAR-10


def build(name, shape):
    if name == "call":  # the smallest model a runtime can run: its cost is the runtime's cost per call
        return torch.nn.Sequential(torch.nn.Conv2d(shape[0], 1, 1), torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    return create_model(name, num_classes=10, in_channels=shape[0], input_size=shape[1:])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="call,lenet5,resnet20,fastnet")
    p.add_argument("--runtimes", default="torch,torchscript,onnxruntime,openvino,onnxruntime-int8,openvino-int8")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--threads", type=int, help="CPU threads for every runtime (default: torch's default)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--round-seconds", type=float, default=0.2, help="time per function per round (at least one call)")
    p.add_argument("--peak-gflops", type=float, help="CPU float32 peak for the FLOP floor (default 147.2 per core)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    peak = (args.peak_gflops or 147.2 * threads) * 1e9
    models = args.models.split(",")
    runtimes = args.runtimes.split(",")
    batches = [int(b) for b in args.batches.split(",")]

    env = environment()
    print(f"machine: {env['cpu_model']}, {env['cpu_cores']} cores, {env['memory_gib']} GiB; torch {env['torch']}, "
          f"{threads} thread(s); load average {os.getloadavg()[0]:.2f} at start")
    fns, flops, made = {}, {}, time.perf_counter()
    for name in models:
        shape = SHAPES.get(name, (3, 32, 32))
        torch.manual_seed(0)
        model = build(name, shape).eval()
        flops[name] = 2 * count_macs(model, shape)
        meta = model_metadata(name, shape, [str(i) for i in range(10)], [0.5] * shape[0], [0.25] * shape[0])
        x = torch.randn(max(batches), *shape)
        calibration = torch.randn(300, *shape, generator=torch.Generator().manual_seed(1))
        for rt in runtimes:
            pred = predictor_for_model(model, meta, rt, "cpu", calibration=calibration)
            for b in batches:
                fns[name, rt, b] = pred.runner(x[:b])
    print(f"converted in {time.perf_counter() - made:.1f} s; timing {len(fns)} functions in {args.rounds} interleaved "
          "rounds ...", flush=True)
    t0 = time.perf_counter()
    med = measure_interleaved(fns, args.rounds, args.round_seconds)
    print(f"timed in {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f} at the end\n")

    head = "| model | input | MFLOP/img | batch | " + " | ".join(f"{rt} ms/img" for rt in runtimes) + \
        " | fastest | vs eager | vs ORT | FLOP floor ms/img | fastest / floor |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in models:
        shape = "x".join(map(str, SHAPES.get(name, (3, 32, 32))))
        floor = flops[name] / peak * 1e3
        for b in batches:
            per = {rt: med[name, rt, b] / b * 1e3 for rt in runtimes}
            best = min(per, key=per.get)
            speedup = per.get("torch", per[best]) / per[best]
            vs_ort = f"{per[best] / per['onnxruntime']:.2f}x" if "onnxruntime" in per else "-"
            print(f"| {name} | {shape} | {flops[name] / 1e6:.2f} | {b} | "
                  + " | ".join(f"{per[rt]:.4f}" for rt in runtimes)
                  + f" | {best} | {speedup:.2f}x | {vs_ort} | {floor:.4f} | {per[best] / floor:.1f}x |")


if __name__ == "__main__":
    main()
