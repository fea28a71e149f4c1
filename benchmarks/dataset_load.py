"""Time to load a dataset from the decoded cache (the second and later loads).

    CNNLAB_DATA_DIR=../shared/data .venv/bin/python benchmarks/dataset_load.py [--repeats 5]

The first load decodes the official files into the cache; every later load reads arrays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from cnnlab.data import load_dataset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    for name in ("mnist", "cifar10"):
        t = time.perf_counter()
        load_dataset(name, os.environ.get("CNNLAB_DATA_DIR"))
        first = time.perf_counter() - t
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            load_dataset(name, os.environ.get("CNNLAB_DATA_DIR"))
            times.append(time.perf_counter() - t)
        print(f"{name}: first load in this process {first:.2f} s (a decode if the cache was empty), "
              f"cached loads median {statistics.median(times):.3f} s over {args.repeats}")


if __name__ == "__main__":
    main()
