"""How long `cnnlab cost` takes per registered model (batch 1, 3x32x32, 10 classes).

Each model is analysed with an empty layer cache (so every distinct layer shape is mapped),
three times; the median wall time and the median CPU time of the process are reported
(on a shared machine the CPU time is the steadier figure). The first analysis in a process also pays a one-time
start-up (PyTorch's meta-tensor and dispatch machinery), reported on its own line.

    .venv/bin/python benchmarks/cost_speed.py
"""

import statistics
import time

from cnnlab.cost.accelerator import _layer_cost
from cnnlab.cost.report import analyze
from cnnlab.models import create_model, list_models


def main():
    t0 = time.perf_counter()
    analyze(create_model("lenet5", 10, 3, 32), (3, 32, 32))
    print(f"one-time start-up (first analysis in the process): {time.perf_counter() - t0:.2f} s")
    print(f"{'model':18s} {'layers':>6s} {'wall s':>8s} {'CPU s':>8s}")
    worst = 0.0
    for name in list_models():
        model = create_model(name, 10, 3, 32)
        times, cpu = [], []
        for _ in range(3):
            _layer_cost.cache_clear()
            t, c = time.perf_counter(), time.process_time()
            rep = analyze(model, (3, 32, 32))
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        med = statistics.median(times)
        worst = max(worst, med)
        print(f"{name:18s} {len(rep.rows):6d} {med:8.3f} {statistics.median(cpu):8.3f}")
    print(f"slowest (wall): {worst:.3f} s")


if __name__ == "__main__":
    main()
