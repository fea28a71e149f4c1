"""The dataset vocabulary: every dataset name cnnlab knows, with its input shape and class count.

    dataset_info("cifar10")             -> DatasetInfo(shape=(3, 32, 32), classes=10, ...)
    dataset_input("synthetic:classes=4") -> ((3, 32, 32), 4)      (None for an image folder)
    check_dataset_name("cifar-10")       raises: unknown dataset, with the names to choose from

This is the one table of datasets: validation, the study table's cost columns and the help
texts read it; `cnnlab.data.datasets` reads the files. Checking a name reads no file.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from cnnlab.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple | None  # (C, H, W); None: decided by the files (image folders)
    classes: int | None
    train: int | None  # official training images
    test: int | None
    description: str


DATASETS = {d.name: d for d in (
    DatasetInfo("mnist", (1, 28, 28), 10, 60_000, 10_000, "handwritten digits (gzip'd IDX files)"),
    DatasetInfo("fashion-mnist", (1, 28, 28), 10, 60_000, 10_000, "Zalando clothing images (gzip'd IDX files)"),
    DatasetInfo("cifar10", (3, 32, 32), 10, 50_000, 10_000, "CIFAR-10 (the python-version archive)"),
    DatasetInfo("cifar100", (3, 32, 32), 100, 50_000, 10_000, "CIFAR-100, fine labels (the python-version archive)"),
    DatasetInfo("imagefolder", None, None, None, None, "imagefolder:PATH, PATH/train/<class>/*.png|jpg and PATH/test/..."),
    DatasetInfo("synthetic", (3, 32, 32), 10, 1000, 200,
                "synthetic[:shape=CxHxW,classes=N,train=N,test=N,noise=F], seeded and learnable"),
)}
SYNTHETIC_DEFAULTS = {"shape": "3x32x32", "classes": "10", "train": "1000", "test": "200", "noise": "0.6"}


def dataset_names() -> list[str]:
    return [n if n not in ("imagefolder",) else "imagefolder:PATH" for n in DATASETS]


def _base(name: str) -> str:
    return str(name).split(":", 1)[0].lower()


def check_dataset_name(name) -> DatasetInfo:
    """The dataset's table entry; a one-line error for an unknown name or a missing image-folder path."""
    if not isinstance(name, str) or not name:
        raise DataError(f"dataset must be a name such as mnist or cifar10, got {name!r}")
    base = _base(name)
    if base not in DATASETS:
        close = difflib.get_close_matches(base, list(DATASETS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(f"unknown dataset '{name}'{hint}: choose one of {', '.join(dataset_names())}")
    if base == "imagefolder" and not name.partition(":")[2]:
        raise DataError("imagefolder needs a path: imagefolder:PATH with PATH/train/<class>/*.png")
    if base == "synthetic" and ":" in name:
        synthetic_options(name.split(":", 1)[1])
    return DATASETS[base]


def synthetic_options(options: str) -> dict:
    """`shape=1x8x8,classes=3` -> the full option dict (strings); a bad option is a one-line error."""
    opts = dict(SYNTHETIC_DEFAULTS)
    for part in filter(None, options.split(",")):
        key = part.split("=")[0]
        if "=" not in part or key not in opts:
            raise DataError(f"bad synthetic option '{part}': use synthetic:shape=CxHxW,classes=N,train=N,test=N,noise=F")
        opts[key] = part.split("=", 1)[1]
    return opts


def dataset_input(name: str):
    """((C, H, W), classes) of a dataset by name alone, or None when only its files can tell."""
    base = _base(name)
    if base == "synthetic":
        opts = synthetic_options(name.split(":", 1)[1] if ":" in name else "")
        try:
            return tuple(int(v) for v in opts["shape"].lower().split("x")), int(opts["classes"])
        except ValueError:
            return None
    info = DATASETS.get(base)
    if info is None or info.shape is None:
        return None
    return info.shape, info.classes
