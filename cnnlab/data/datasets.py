"""Datasets by name, decoded once into a cache, split into train / validation / test.

    ds = load_dataset("cifar10", data_dir=None, val_size=5000, seed=0, subset=None)
    ds.train.x  # uint8 tensor (N, C, H, W); ds.train.y int64 (N,)
    ds.val, ds.test, ds.classes, ds.num_classes, ds.shape, ds.mean, ds.std

Names: mnist, fashion-mnist, cifar10, cifar100, imagefolder:PATH, synthetic[:key=value,...].
The data directory is `data_dir`, else $CNNLAB_DATA_DIR, else data/ in cnnlab's cache (the root is
$CNNLAB_CACHE_DIR, else ~/.cache/cnnlab: cnnlab.envinfo.user_cache_dir); it is only read (and, for
a missing dataset, downloaded into). Decoded arrays go to decoded/ in cnnlab's cache, so the next
load is a plain array read.

The readers (cnnlab.data.formats) refuse malformed files with a one-line DataError: counts that
differ, labels outside 0..classes-1, files that are not what they claim to be.

The cache does not trust its own files: an entry (one folder per dataset and source fingerprint) is
written into a temporary folder and renamed into place, so it appears complete or not at all, and
its meta.json records a CRC-32 of every array and of the metadata. Each load checks them (0.08 s
for CIFAR-10's 60,000 images); an entry that cannot be read, fails a checksum or predates checksums
is reported in one warning line and rebuilt from the source files in the same call. Labels are
checked against the class count on every load too: a verified entry holding an out-of-range label
is a DataError naming the cache file and split (the entry is removed, so the next load decodes the
sources again).
Warnings go through `cnnlab.errors.warn`: one stderr line, `cnnlab: warning: ...`.

A dataset with one class (an image folder with one class folder, synthetic:classes=1) is a DataError
unless the caller asks for `min_classes=1`: a model can be evaluated on one of its classes, but a
classifier trained on one class reaches 100% having learnt nothing. Cache entries and their files get
the modes any new file gets (the umask), so a group can share the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data import formats
from cnnlab.data.download import download, md5sum
from cnnlab.data.sources import CIFAR_DIRS, FASHION_CLASSES, IDX_FILES, MNIST_CLASSES, SOURCES
from cnnlab.envinfo import user_cache_dir
from cnnlab.errors import DataError, warn

DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH", "synthetic")


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, C, H, W)
    y: torch.Tensor  # int64 (N,)

    def __len__(self):
        return len(self.y)


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    classes: list
    mean: tuple  # per channel, of the official training set, in [0, 1] units
    std: tuple

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def shape(self):
        return tuple(self.train.x.shape[1:])


def default_data_dir() -> Path:
    return Path(os.environ.get("CNNLAB_DATA_DIR") or user_cache_dir("data"))


def cache_dir() -> Path:
    """Where decoded datasets are kept: decoded/ in cnnlab's cache."""
    return user_cache_dir("decoded")


def _resolve_data_dir(data_dir) -> Path:
    if data_dir is None:
        return default_data_dir()
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory {path} does not exist: create it, or point --data-dir "
                        "(or CNNLAB_DATA_DIR) at a folder holding <dataset>/<official files>")
    return path


def _locate(name: str, root: Path) -> list[Path]:
    """The dataset's source files under root, downloading whichever are missing."""
    folder = root / name
    if name in CIFAR_DIRS and (folder / CIFAR_DIRS[name]).is_dir() and not (folder / SOURCES[name][0].name).exists():
        return [folder / CIFAR_DIRS[name]]
    paths = []
    for remote in SOURCES[name]:
        p = folder / remote.name
        if not p.exists():
            print(f"cnnlab: {p} not found; downloading {remote.url}", file=sys.stderr)
            download(remote, p)
        paths.append(p)
    return paths


def _fingerprint(paths) -> str:
    h = hashlib.sha1()
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            st = f.stat()
            h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _channel_stats(x: np.ndarray):
    n = x.shape[0]
    s = np.zeros(x.shape[1]); s2 = np.zeros(x.shape[1])
    for i in range(0, n, 4096):  # chunks keep float64 memory small
        b = x[i:i + 4096].astype(np.float64) / 255.0
        s += b.sum(axis=(0, 2, 3)); s2 += (b * b).sum(axis=(0, 2, 3))
    count = n * x.shape[2] * x.shape[3]
    mean = s / count
    return tuple(float(v) for v in mean), tuple(float(v) for v in np.sqrt(np.maximum(s2 / count - mean**2, 1e-12)))


def _verify_local(name, paths):
    for remote, p in zip(SOURCES.get(name, ()), paths):
        if p.is_file() and md5sum(p) != remote.md5:
            warn(f"{p} differs from the official file (MD5 {remote.md5}); using it as it is")


def _decode(name, paths, root):
    if name in ("mnist", "fashion-mnist"):
        f = dict(zip(IDX_FILES, paths))
        classes = list(MNIST_CLASSES if name == "mnist" else FASHION_CLASSES)
        tx, ty = formats.read_idx_pair(f[IDX_FILES[0]], f[IDX_FILES[1]], len(classes))
        ex, ey = formats.read_idx_pair(f[IDX_FILES[2]], f[IDX_FILES[3]], len(classes))
        return tx, ty, ex, ey, classes
    if name in CIFAR_DIRS:
        return formats.read_cifar(paths[0], name)
    return formats.read_image_folder(root, warn=warn)


CACHE_FORMAT = 2  # 2: meta.json holds "checksums"
_ARRAYS = ("train_x", "train_y", "test_x", "test_y")
_META_KEYS = ("classes", "mean", "std", "sources")


def _checksum(a: np.ndarray) -> str:
    """CRC-32 of an array's dtype, shape and bytes. Measured on the 2-core development machine:
    checksumming CIFAR-10's four arrays (60,000 images, 185 MB) takes 0.08 s (zlib.crc32; blake2b took
    0.18 s, sha1 0.12 s), so a cached load_dataset("cifar10") went from 0.12 s to 0.21 s. It guards
    against accidental damage, not tampering: whoever can edit the arrays can edit meta.json."""
    a = np.ascontiguousarray(a)
    crc = zlib.crc32(f"{a.dtype.str}{a.shape}".encode())
    return f"crc32:{zlib.crc32(a.reshape(-1).view(np.uint8), crc):08x}"


def _meta_checksum(meta: dict) -> str:
    blob = json.dumps({k: meta.get(k) for k in _META_KEYS}, sort_keys=True).encode()
    return f"crc32:{zlib.crc32(blob):08x}"


def _read_entry(entry: Path):
    """(arrays, meta, None) from a verified cache entry, else (None, None, why it cannot be trusted)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {k: np.load(entry / f"{k}.npy", allow_pickle=False) for k in _ARRAYS}
    except FileNotFoundError as e:
        return None, None, f"{Path(e.filename or 'a file').name} is missing"
    except Exception as e:  # a damaged .npy header or JSON can raise many types; the entry is only a cache
        return None, None, f"it cannot be read ({type(e).__name__}: {' '.join(str(e).split())})"
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or not isinstance(meta.get("checksums"), dict):
        return None, None, "it has no checksums (an older cnnlab wrote it)"
    sums = meta["checksums"]
    if _meta_checksum(meta) != sums.get("meta"):
        return None, None, "meta.json does not match the checksum recorded when it was written"
    for k in _ARRAYS:
        if _checksum(arrays[k]) != sums.get(k):
            return None, None, f"{k}.npy does not match the checksum recorded when it was written"
    return arrays, meta, None


def _write_entry(entry: Path, arrays: dict, meta: dict, replace: bool):
    """Write a cache entry atomically: a temporary folder renamed into place. An entry already there
    is kept (another process just wrote it) unless `replace` (it failed verification)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    # os.mkdir, not tempfile.mkdtemp: mkdtemp makes the folder 0700 whatever the umask, and the rename
    # keeps that mode, so a group sharing the cache could not read the entry
    tmp = entry.parent / f".{entry.name}.{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    stale = entry.parent / f".{entry.name}.stale-{uuid.uuid4().hex[:8]}"
    try:
        for k, v in arrays.items():
            np.save(tmp / f"{k}.npy", v)
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, entry)
        except OSError:  # an entry is there
            if replace:
                try:
                    os.replace(entry, stale)
                    os.replace(tmp, entry)
                except OSError:  # another process put a fresh entry there first
                    pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)


def _check_cached(entry: Path, arrays: dict, meta: dict):
    """Why a verified entry's counts cannot be trusted (None: they can); a DataError for a label
    outside the class count, naming the cache file and split."""
    k = len(meta["classes"])
    for split in ("train", "test"):
        nx, ny = len(arrays[f"{split}_x"]), len(arrays[f"{split}_y"])
        if nx != ny:
            return f"{split}_x.npy holds {nx} images but {split}_y.npy {ny} labels"
    for split in ("train", "test"):
        where = f"the decoded cache file {entry / f'{split}_y.npy'} ({split} split)"
        try:
            formats.check_labels(arrays[f"{split}_y"], k, where)
        except DataError as e:
            shutil.rmtree(entry, ignore_errors=True)
            raise DataError(f"{e}; the cache entry has been removed, so the next load decodes the source files "
                            "again") from None
    return None


def _load_cached(key: str, name: str, paths, root):
    """Decoded arrays from the cache, verified; decoding (and checking checksums) on a miss, and
    rebuilding an entry that fails verification (see the module docstring)."""
    entry = cache_dir() / f"{name.replace(':', '_').replace('/', '_')}-{key}"
    rebuild = entry.exists()
    if rebuild:
        arrays, meta, problem = _read_entry(entry)
        if problem is None:
            problem = _check_cached(entry, arrays, meta)
            if problem is None:
                return arrays, meta
        warn(f"the decoded cache {entry} cannot be trusted: {problem}; rebuilding it from "
              f"{', '.join(map(str, paths))}")
    _verify_local(name, paths)
    tx, ty, ex, ey, classes = _decode(name, paths, root)
    mean, std = _channel_stats(tx)
    # contiguous and writable, like arrays read back from the cache (an IDX reader's arrays are read-only views)
    arrays = {k: np.require(v, requirements=("C", "W"))
              for k, v in dict(train_x=tx, train_y=ty, test_x=ex, test_y=ey).items()}
    meta = dict(format=CACHE_FORMAT, classes=classes, mean=mean, std=std, sources=[str(p) for p in paths])
    meta["checksums"] = {"meta": _meta_checksum(meta), **{k: _checksum(v) for k, v in arrays.items()}}
    _write_entry(entry, arrays, meta, replace=rebuild)
    return arrays, meta


def _synthetic(options: str, seed: int = 1234):
    """Seeded random images whose class is learnable: each class is a random template plus noise."""
    opts = dict(shape="3x32x32", classes="10", train="1000", test="200", noise="0.6")
    for part in filter(None, options.split(",")):
        if "=" not in part or part.split("=")[0] not in opts:
            raise DataError(f"bad synthetic option '{part}': use synthetic:shape=CxHxW,classes=N,train=N,test=N,noise=F")
        k, v = part.split("=", 1)
        opts[k] = v
    try:
        c, h, w = (int(v) for v in opts["shape"].lower().split("x"))
        k, ntr, nte, noise = int(opts["classes"]), int(opts["train"]), int(opts["test"]), float(opts["noise"])
    except ValueError:
        raise DataError(f"bad synthetic options '{options}': shape is CxHxW, the counts are integers") from None
    if k < 1:
        raise DataError(f"bad synthetic options '{options}': classes must be at least 1 (2 to train a classifier)")
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 1, (k, c, h, w))

    def make(n):
        y = rng.integers(0, k, n)
        x = templates[y] * (1 - noise) + rng.uniform(0, 1, (n, c, h, w)) * noise
        return (x * 255).round().astype(np.uint8), y.astype(np.int64)

    tx, ty = make(ntr)
    ex, ey = make(nte)
    mean, std = _channel_stats(tx)
    return dict(train_x=tx, train_y=ty, test_x=ex, test_y=ey), dict(classes=[f"class{i}" for i in range(k)], mean=mean, std=std)


def default_val_size(n_train: int) -> int:
    return min(5000, n_train // 10)


def load_dataset(name: str, data_dir=None, val_size: int | None = None, seed: int = 0, subset: int | None = None,
                 min_classes: int = 2) -> Dataset:
    """Load a dataset by name; see the module docstring. `val_size=None` means 5000 images, or a
    tenth of the training set when that is smaller. The split is seeded; the test set is untouched.
    A dataset with fewer than `min_classes` classes is a DataError: a classifier trained on one class
    scores 100% and has learnt nothing. Evaluating a model on a folder holding one of its classes
    passes min_classes=1."""
    base = name.split(":", 1)[0].lower()
    if base == "synthetic":
        arrays, meta = _synthetic(name.split(":", 1)[1] if ":" in name else "")
    elif base == "imagefolder":
        root = Path(name.split(":", 1)[1] if ":" in name else "").expanduser()
        if not root.is_dir():
            raise DataError(f"image folder '{root}' does not exist: use imagefolder:PATH with PATH/train/<class>/*.png")
        arrays, meta = _load_cached(_fingerprint([root]), f"imagefolder-{root.resolve().name}", [root], root)
    elif base in SOURCES:
        root = _resolve_data_dir(data_dir)
        paths = _locate(base, root)
        arrays, meta = _load_cached(_fingerprint(paths), base, paths, root)
    else:
        raise DataError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")

    classes = list(meta["classes"])
    if len(classes) < min_classes:
        fix = ("use classes=2 or more" if base == "synthetic" else
               "give each class its own folder in train/ and test/" if base == "imagefolder" else "check the files")
        raise DataError(f"{name} has only {len(classes)} class ({', '.join(map(repr, classes))}): a classifier needs "
                        f"at least {min_classes} classes; {fix}")
    n = len(arrays["train_y"])
    val_size = default_val_size(n) if val_size is None else int(val_size)
    if not 0 <= val_size < n:
        raise DataError(f"validation size {val_size} does not fit the {n} training images: use --val-size below {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if subset is not None:
        if subset < 1:
            raise DataError(f"--subset must be at least 1, got {subset}")
        train_idx = train_idx[:subset]
    tx, ty = torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"])
    return Dataset(
        name=name,
        train=Split(tx[train_idx], ty[train_idx]),
        val=Split(tx[val_idx], ty[val_idx]),
        test=Split(torch.from_numpy(arrays["test_x"]), torch.from_numpy(arrays["test_y"])),
        classes=classes,
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
    )
