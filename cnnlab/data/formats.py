"""Readers for the official on-disk formats.

Each reader returns uint8 images shaped (N, C, H, W) and int64 labels, and raises DataError (one
line, naming the file) for anything it cannot trust, never a traceback:

- a truncated or corrupt file, a wrong IDX magic number, a CIFAR batch or meta file that is not a
  pickle of the expected dict (the message names its path, or its member and the archive);
- image and label counts that differ (an IDX pair, each CIFAR batch);
- a label outside 0..classes-1 (`check_labels`; the message names the file or split, the value and
  the class count). The decode cache checks its labels again when it loads.

Image folders, `root/{train,test}/<class>/<image>` (`list_image_folder`, `read_image_folder`):

- classes are the folders in train/, sorted by name; test/ must hold the same class folders;
- entries whose name starts with '.' (.DS_Store, .ipynb_checkpoints, ._x.png) are ignored;
- files without a .png/.jpg/.jpeg/.bmp extension, folders inside a class folder and files lying
  directly in train/ or test/ are skipped, with one warning line counting them;
- a class folder without images, and an image that cannot be decoded, are a DataError naming it;
- the colour mode is the majority's over all images (grayscale or RGB; a tie goes to RGB); the
  other images are converted, with one warning line counting them;
- all images must have the first training image's size: another size is a DataError naming the file.
Warnings go to the `warn` callable passed in (by default `cnnlab.errors.warn`).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError
from cnnlab.errors import warn as default_warn

_CORRUPT = (EOFError, OSError, zlib.error, tarfile.TarError, pickle.UnpicklingError, ValueError, KeyError)


def _fix(path):
    return f"delete {path} and let cnnlab download it again, or replace it with the official file"


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def check_labels(y: np.ndarray, num_classes: int, where: str, fix: str | None = None) -> None:
    """DataError unless every label is in 0..num_classes-1; `where` names the file or split."""
    y = np.asarray(y)
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where} has label {int(y[i])} (at index {i}; {int(bad.sum())} of {y.size} labels are "
                        f"outside 0..{num_classes - 1}), but the dataset has {num_classes} classes"
                        + (f": {fix}" if fix else ""))


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
    if len(raw) < 4 + 4 * expect_ndim:
        raise DataError(f"{path} is too short to hold its IDX header: {_fix(path)}")
    dims = struct.unpack(f">{expect_ndim}I", raw[4:4 + 4 * expect_ndim])
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * expect_ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {body.size} bytes of data, but its header promises {dims}: {_fix(path)}")
    return body.reshape(dims)


def read_idx_pair(images: Path, labels: Path, num_classes: int = 10):
    """An IDX image file and its label file; labels must lie in 0..num_classes-1 (10 for the MNISTs)."""
    x = read_idx(images, 3)[:, None, :, :]
    y = read_idx(labels, 1).astype(np.int64)
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels: {_fix(labels)}")
    check_labels(y, num_classes, str(labels), _fix(labels))
    return x, y


def _unpickle(blob: bytes, where: str, fix: str) -> dict:
    try:
        d = pickle.loads(blob, encoding="bytes")
    except Exception as e:  # garbage raises almost any type from the unpickler
        raise DataError(f"{where} is not a CIFAR pickle file ({_one_line(e)}): {fix}") from None
    if not isinstance(d, dict):
        raise DataError(f"{where} holds a pickled {type(d).__name__}, not the dict of a CIFAR file: {fix}")
    return d


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
    fix = _fix(source)
    blobs, where = {}, {}  # where: how a message names each file
    if source.is_dir():
        for n in sorted(wanted):
            p = source / n
            if not p.exists():
                raise DataError(f"{p} is missing from the extracted CIFAR folder: {fix}")
            try:
                blobs[n] = p.read_bytes()
            except OSError as e:
                raise DataError(f"{p} cannot be read ({_one_line(e)}): {fix}") from None
            where[n] = str(p)
    else:
        try:
            with tarfile.open(source, "r:gz") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if base in wanted and member.isfile():
                        blobs[base] = tar.extractfile(member).read()
                        where[base] = f"{member.name} in {source}"
        except _CORRUPT as e:
            raise DataError(f"{source} is truncated or corrupt ({type(e).__name__}: {e}): {fix}") from None
        missing = sorted(wanted - set(blobs))
        if missing:
            raise DataError(f"{source} lacks {', '.join(missing)}: it is not the CIFAR python-version archive; {fix}")

    meta = _unpickle(blobs[meta_name], where[meta_name], fix)
    try:
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[meta_key]]
    except (KeyError, TypeError, UnicodeDecodeError) as e:
        raise DataError(f"{where[meta_name]} has no usable class-name list {meta_key!r} ({_one_line(e)}): "
                        f"{fix}") from None

    def batch(name):
        d = _unpickle(blobs[name], where[name], fix)
        try:
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[label_key], dtype=np.int64)
        except (KeyError, ValueError, TypeError, OverflowError) as e:
            raise DataError(f"{where[name]} has the wrong layout for a CIFAR batch ({_one_line(e)}): {fix}") from None
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{where[name]} holds {len(x)} images but {y.size} labels: {fix}")
        check_labels(y, len(classes), where[name], fix)
        return x, y

    parts = [batch(n) for n in train_names]
    test_x, test_y = batch(test_name)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test_x, test_y, classes)


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def _visible(folder: Path):
    """[(path, is_folder)] of the entries not starting with '.', sorted by name (scandir: no stat per file)."""
    with os.scandir(folder) as it:
        entries = sorted((e.name, e.is_dir()) for e in it if not e.name.startswith("."))
    return [(folder / name, is_dir) for name, is_dir in entries]


def _plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def list_image_folder(root: Path, warn=None):
    """`root/{train,test}/<class>/*.png|jpg` -> ({split: [(path, class_index)]}, classes sorted by name).

    See the module docstring for what is ignored, skipped (one warning) and refused (DataError)."""
    warn = warn or default_warn
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataError(f"image folder {root} needs train/ and test/ subfolders, each holding one folder per class")
    class_dirs, loose = {}, []
    for split in ("train", "test"):
        entries = _visible(root / split)
        class_dirs[split] = [p for p, is_dir in entries if is_dir]
        loose += [p for p, is_dir in entries if not is_dir]
    classes = [d.name for d in class_dirs["train"]]
    if not classes:
        raise DataError(f"{root / 'train'} holds no class folders: put each class's images in train/<class>/")
    test_classes = [d.name for d in class_dirs["test"]]
    if test_classes != classes:
        extra, lacking = sorted(set(test_classes) - set(classes)), sorted(set(classes) - set(test_classes))
        diff = "; ".join(s for s in (f"only test/ has {extra}" if extra else "",
                                     f"test/ lacks {lacking}" if lacking else "") if s)
        raise DataError(f"{root / 'train'} and {root / 'test'} must hold the same class folders ({diff})")
    index = {c: i for i, c in enumerate(classes)}
    exts, nested = Counter(), []
    out = {}
    for split in ("train", "test"):
        items = []
        for cdir in class_dirs[split]:
            images = []
            for p, is_dir in _visible(cdir):
                if is_dir:
                    nested.append(p)
                elif p.suffix.lower() in IMAGE_EXTS:
                    images.append(p)
                else:
                    exts[p.suffix.lower() or "(no extension)"] += 1
            if not images:
                raise DataError(f"class folder {cdir} holds no {'/'.join(IMAGE_EXTS)} images: add its images "
                                "or remove the folder (train/ and test/ need the same classes)")
            items += [(p, index[cdir.name]) for p in images]
        out[split] = items
    if exts or nested or loose:
        parts = []
        if exts:
            parts.append(f"{_plural(sum(exts.values()), 'file')} with other extensions ("
                         + ", ".join(f"{e}: {n}" for e, n in sorted(exts.items())) + ")")
        if nested:
            parts.append(f"{_plural(len(nested), 'folder')} inside class folders (e.g. {nested[0].relative_to(root)})")
        if loose:
            parts.append(f"{_plural(len(loose), 'file')} outside class folders (e.g. {loose[0].relative_to(root)})")
        warn(f"image folder {root}: skipped " + ", ".join(parts) + f"; only {'/'.join(IMAGE_EXTS)} files directly "
             "inside train/<class>/ and test/<class>/ are read")
    return out, classes


def read_image_folder(root: Path, warn=None):
    """Decode an image folder; returns (train_x, train_y, test_x, test_y, classes)."""
    from PIL import Image

    warn = warn or default_warn
    listing, classes = list_image_folder(root, warn)
    size, n_gray, n_all = None, 0, 0
    decoded = {}  # split -> [array]: (H, W) for grayscale files, (H, W, 3) for colour ones
    for split, items in listing.items():
        decoded[split] = []
        for p, _ in items:
            try:
                with Image.open(p) as im:
                    if size is None:
                        size = im.size
                    elif im.size != size:
                        raise DataError(f"{p} is {im.size[0]}x{im.size[1]} but the folder's images are "
                                        f"{size[0]}x{size[1]}: resize them all to one size")
                    gray = im.mode in _GRAY_MODES
                    a = np.asarray(im.convert("L" if gray else "RGB"))
            except DataError:
                raise
            except Exception as e:  # Pillow raises many types for damaged files (OSError, SyntaxError, ValueError...)
                raise DataError(f"{p} is not a readable image ({_one_line(e)}): remove or replace it") from None
            decoded[split].append(a)
            n_gray += gray
            n_all += 1
    gray_set = n_gray > n_all - n_gray
    minority = n_gray if not gray_set else n_all - n_gray
    if minority:
        example = next(p for split in listing for (p, _), a in zip(listing[split], decoded[split])
                       if (a.ndim == 2) != gray_set)
        warn(f"image folder {root}: {minority} of {n_all} images are {'colour' if gray_set else 'grayscale'} and "
             f"were converted to {'grayscale' if gray_set else 'RGB'}, the mode of most images "
             f"(e.g. {example.relative_to(root)})")
    arrays = {}
    for split, items in listing.items():
        x = np.empty((len(items), 1 if gray_set else 3, size[1], size[0]), np.uint8)
        for i, a in enumerate(decoded[split]):
            if gray_set:
                x[i, 0] = a if a.ndim == 2 else np.asarray(Image.fromarray(a).convert("L"))
            else:
                x[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # gray -> RGB repeats it, as Pillow does
        decoded[split] = None  # free each split's decoded images once copied
        y = np.array([c for _, c in items], np.int64)
        check_labels(y, len(classes), str(root / split))
        arrays[split] = (x, y)
    return (*arrays["train"], *arrays["test"], classes)
