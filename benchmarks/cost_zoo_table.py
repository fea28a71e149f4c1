"""Cost of every registered model on CIFAR-10 input (3x32x32, 10 classes), as a Markdown table:
parameters, MACs, peak activation (competition rule), accelerator energy and cycles (analytic
model, default 256-PE architecture) and measured CPU latency per image at batch 1 (median
of 30 runs after warm-up, one PyTorch thread so that figures stay comparable on a shared machine).

    .venv/bin/python benchmarks/cost_zoo_table.py
"""

import torch

from cnnlab.workflows.measure.bench import latency_per_image
from cnnlab.cost.report import analyze
from cnnlab.models import create_model, list_models


def main():
    print("| model | params | MACs | peak activation (B) | 1 MB limit | energy (mJ) | cycles | CPU ms/image (batch 1) |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    torch.set_num_threads(1)
    x = torch.randn(1, 3, 32, 32)
    for name in list_models():
        model = create_model(name, 10, 3, 32).eval()
        rep = analyze(model, (3, 32, 32))
        t = rep.totals
        ms = latency_per_image(model, x, torch.device("cpu"), repeats=30) * 1e3
        print(f"| {name} | {t['params']:,} | {t['macs']:,} | {rep.peak_activation:,} | "
              f"{'pass' if rep.activation_ok else 'FAIL'} | {t['energy_pj'] * 1e-9:.4f} | {t['cycles']:,} | {ms:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
