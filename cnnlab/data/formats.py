"""Readers for the official on-disk formats. Each returns uint8 arrays shaped (N, C, H, W)
and int64 labels, and raises DataError naming the file for anything malformed."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError

_CORRUPT = (EOFError, OSError, zlib.error, tarfile.TarError, pickle.UnpicklingError, ValueError, KeyError)


def _fix(path):
    return f"delete {path} and let cnnlab download it again, or replace it with the official file"


def read_idx(path: Path, expect_ndim: int) -> np.ndarray:
    """A gzip'd IDX file (MNIST's format): magic 0x0000080N (N = number of dimensions), sizes, then bytes."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except _CORRUPT as e:
        raise DataError(f"{path} is truncated or not a gzip file ({e}): {_fix(path)}") from None
    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an IDX file: {_fix(path)}")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != 0x0800 + expect_ndim:
        raise DataError(f"{path} has IDX magic number 0x{magic:08x}, expected 0x{0x0800 + expect_ndim:08x} "
                        f"(a {'image' if expect_ndim == 3 else 'label'} file): {_fix(path)}")
    dims = struct.unpack(f">{expect_ndim}I", raw[4:4 + 4 * expect_ndim])
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * expect_ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {body.size} bytes of data, but its header promises {dims}: {_fix(path)}")
    return body.reshape(dims)


def read_idx_pair(images: Path, labels: Path):
    x = read_idx(images, 3)[:, None, :, :]
    y = read_idx(labels, 1).astype(np.int64)
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels: {_fix(labels)}")
    return x, y


def _unpickle(blob: bytes, name: str):
    try:
        return pickle.loads(blob, encoding="bytes")
    except _CORRUPT as e:
        raise DataError(f"CIFAR batch {name} is corrupt ({e})") from None


def read_cifar(source: Path, kind: str):
    """The CIFAR "python version": a .tar.gz or its extracted folder.

    Returns (train_x, train_y, test_x, test_y, classes)."""
    label_key = b"labels" if kind == "cifar10" else b"fine_labels"
    if kind == "cifar10":
        train_names = [f"data_batch_{i}" for i in range(1, 6)]
        test_name, meta_name, meta_key = "test_batch", "batches.meta", b"label_names"
    else:
        train_names, test_name, meta_name, meta_key = ["train"], "test", "meta", b"fine_label_names"
    wanted = set(train_names) | {test_name, meta_name}
    blobs = {}
    if source.is_dir():
        for n in wanted:
            p = source / n
            if not p.exists():
                raise DataError(f"{p} is missing from the extracted CIFAR folder: {_fix(source)}")
            blobs[n] = p.read_bytes()
    else:
        try:
            with tarfile.open(source, "r:gz") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if base in wanted and member.isfile():
                        blobs[base] = tar.extractfile(member).read()
        except _CORRUPT as e:
            raise DataError(f"{source} is truncated or corrupt ({type(e).__name__}: {e}): {_fix(source)}") from None
        missing = sorted(wanted - set(blobs))
        if missing:
            raise DataError(f"{source} lacks {', '.join(missing)}: it is not the CIFAR python-version archive; {_fix(source)}")

    def batch(name):
        d = _unpickle(blobs[name], name)
        try:
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[label_key], dtype=np.int64)
        except (KeyError, ValueError) as e:
            raise DataError(f"CIFAR batch {name} in {source} has the wrong layout ({e}): {_fix(source)}") from None
        return x, y

    parts = [batch(n) for n in train_names]
    test_x, test_y = batch(test_name)
    meta = _unpickle(blobs[meta_name], meta_name)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[meta_key]]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test_x, test_y, classes)


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


def list_image_folder(root: Path):
    """`root/{train,test}/<class>/*.png|jpg` -> {split: [(path, class_index)]}, classes sorted by name."""
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataError(f"image folder {root} needs train/ and test/ subfolders, each holding one folder per class")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{root / 'train'} holds no class folders")
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split in ("train", "test"):
        items = []
        for cdir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            if cdir.name not in index:
                raise DataError(f"class folder {cdir} is not among the training classes {classes}")
            items += [(p, index[cdir.name]) for p in sorted(cdir.iterdir()) if p.suffix.lower() in IMAGE_EXTS]
        if not items:
            raise DataError(f"{root / split} holds no .png/.jpg images")
        out[split] = items
    return out, classes


def read_image_folder(root: Path):
    from PIL import Image

    listing, classes = list_image_folder(root)
    first = Image.open(listing["train"][0][0])
    mode = "L" if first.mode in ("L", "1", "I;16", "I") else "RGB"
    size = first.size
    arrays = {}
    for split, items in listing.items():
        x = np.empty((len(items), 1 if mode == "L" else 3, size[1], size[0]), np.uint8)
        for i, (p, _) in enumerate(items):
            try:
                with Image.open(p) as im:
                    if im.size != size:
                        raise DataError(f"{p} is {im.size[0]}x{im.size[1]} but the folder's images are "
                                        f"{size[0]}x{size[1]}: resize them all to one size")
                    a = np.asarray(im.convert(mode))
            except (OSError, SyntaxError) as e:
                raise DataError(f"{p} is not a readable image ({e}): remove or replace it") from None
            x[i] = a[None] if mode == "L" else a.transpose(2, 0, 1)
        arrays[split] = (x, np.array([c for _, c in items], np.int64))
    return (*arrays["train"], *arrays["test"], classes)
