"""int8 accuracy of trained runs: every format with an int8 form, float32 against int8 on the whole test split.

    python benchmarks/int8_accuracy.py RUN_DIR [RUN_DIR ...] [--calibration-images 300] [--data-dir DIR]

Each run is exported with `cnnlab export RUN --format F --int8` (calibrated on the training split, checked
on every test image with the run's test-time augmentation) into a temporary folder, for each format
whose registry entry has an int8 form (ONNX Runtime's static quantization, NNCF for OpenVINO). The
table gives both accuracies, their difference, the largest per-class drop, the file sizes and the
export time (calibration and the check included). A refused file (a class over --max-class-drop,
accepted here up to 100 points so the figure is still reported) would show in the worst-class column.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from cnnlab.envinfo import environment
from cnnlab.workflows.export import export_run, int8_formats, read_metadata


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--data-dir")
    args = p.parse_args()
    env = environment()
    print(f"machine: {env['cpu_model']}, {env['cpu_cores']} cores; torch {env['torch']}; load average "
          f"{os.getloadavg()[0]:.2f} at start\n")
    print("| run | model | dataset | format (tool) | float32 test acc | int8 test acc | int8 - float32 (points) | "
          "same predictions | largest class drop (points) | float32 / int8 file | export s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="cnnlab-int8-bench-") as tmp:
        for run in args.runs:
            for fmt in int8_formats():
                fp32 = export_run(run, fmt.name, out=Path(tmp) / f"fp32.{fmt.ext}", data_dir=args.data_dir)
                info = export_run(run, fmt.name, out=Path(tmp) / f"int8.{fmt.ext}", data_dir=args.data_dir, int8=True,
                                  calibration_images=args.calibration_images, max_class_drop=100)
                c = info["quantization"]["check"]
                dataset = read_metadata(info["path"])[1]["dataset"]["name"]
                print(f"| {Path(run).name} | {info['model']} | {dataset} ({c['images']} test images, TTA {c['tta']}) | "
                      f"{fmt.name} ({info['quantization']['tool']}) | {100 * c['fp32_acc']:.2f}% | "
                      f"{100 * c['int8_acc']:.2f}% | {100 * (c['int8_acc'] - c['fp32_acc']):+.2f} | "
                      f"{100 * c['agreement']:.2f}% | {c['max_class_drop_points']:.2f} ({c['worst_class']}) | "
                      f"{fp32['bytes'] / 1024:.0f} / {info['bytes'] / 1024:.0f} KiB | {info['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
