"""Data-reading reliability: readers refuse what they cannot trust (counts, labels, corrupt files),
the decode cache verifies its checksums and rebuilds itself, image folders do not guess silently.

Every file here is a small synthetic one made in tmp_path."""

import gzip
import io
import json
import pickle
import re
import struct
import tarfile

import numpy as np
import pytest
import torch

from cnnlab.data import load_dataset
from cnnlab.data.datasets import cache_dir
from cnnlab.errors import DataError


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache per test, so one test's entries never serve another."""
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))


def warnings_of(err: str):
    return [line for line in err.splitlines() if line.startswith("cnnlab: warning:")]


# ---------------------------------------------------------------- IDX (MNIST)

def write_idx(path, array):
    array = np.asarray(array, np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def make_mnist(root, n_train=60, n_test=20, test_labels=None):
    rng = np.random.default_rng(0)
    d = root / "mnist"
    d.mkdir(parents=True)
    write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test) if test_labels is None else test_labels)
    return d


def test_idx_label_out_of_range_names_the_file_value_and_class_count(tmp_path):
    labels = np.arange(20) % 10
    labels[7] = 10
    make_mnist(tmp_path, test_labels=labels)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz has label 10 .*10 classes") as e:
        load_dataset("mnist", tmp_path)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- CIFAR

def cifar_files(kind="cifar10", n=20, override=None):
    """{member name: bytes} of a fake CIFAR python-version archive; override maps a name to the object
    (or raw bytes) to store instead."""
    rng = np.random.default_rng(0)
    override = override or {}
    if kind == "cifar10":
        names, meta = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "batches.meta"
        key, meta_obj, k = b"labels", {b"label_names": [f"c{i}".encode() for i in range(10)]}, 10
    else:
        names, meta = ["train", "test"], "meta"
        key, meta_obj, k = b"fine_labels", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, 100
    objs = {nm: {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(rng.integers(0, k, n))}
            for nm in names}
    objs[meta] = meta_obj
    objs.update(override)
    return {nm: o if isinstance(o, bytes) else pickle.dumps(o) for nm, o in objs.items()}


def write_cifar(root, files, kind="cifar10", packed=True):
    d = root / kind
    d.mkdir(parents=True)
    inner = "cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python"
    if packed:
        path = d / ("cifar-10-python.tar.gz" if kind == "cifar10" else "cifar-100-python.tar.gz")
        with tarfile.open(path, "w:gz") as tar:
            for nm, blob in files.items():
                info = tarfile.TarInfo(f"{inner}/{nm}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        return path
    (d / inner).mkdir()
    for nm, blob in files.items():
        (d / inner / nm).write_bytes(blob)
    return d / inner


def named(packed, source, member, inner="cifar-10-batches-py"):
    """How an error message names a CIFAR file: the member in the archive, or the extracted file."""
    return f"{inner}/{member} in {source}" if packed else str(source / member)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "extracted"])
def test_cifar_batch_with_fewer_labels_than_images(tmp_path, packed):
    rng = np.random.default_rng(1)
    bad = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 19))}
    source = write_cifar(tmp_path, cifar_files(override={"data_batch_3": bad}), packed=packed)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path, val_size=10)
    msg = str(e.value)
    assert named(packed, source, "data_batch_3") in msg and "20 images but 19 labels" in msg and "\n" not in msg


@pytest.mark.parametrize("value", [10, 255, -1])
def test_cifar10_label_out_of_range(tmp_path, value):
    labels = [i % 10 for i in range(20)]
    labels[5] = value
    bad = {b"data": np.zeros((20, 3072), np.uint8), b"labels": labels}
    source = write_cifar(tmp_path, cifar_files(override={"test_batch": bad}))
    with pytest.raises(DataError, match=re.escape(f"test_batch in {source} has label {value} ") + r".*10 classes"):
        load_dataset("cifar10", tmp_path, val_size=10)


def test_cifar100_fine_label_out_of_range(tmp_path):
    labels = [i % 100 for i in range(20)]
    labels[0] = 100
    bad = {b"data": np.zeros((20, 3072), np.uint8), b"fine_labels": labels}
    source = write_cifar(tmp_path, cifar_files("cifar100", override={"train": bad}), kind="cifar100")
    with pytest.raises(DataError, match=re.escape(f"cifar-100-python/train in {source} has label 100 ") + r".*100 classes"):
        load_dataset("cifar100", tmp_path, val_size=10)


def test_cifar100_loads_with_its_fine_labels(tmp_path):
    write_cifar(tmp_path, cifar_files("cifar100"), kind="cifar100", packed=False)
    d = load_dataset("cifar100", tmp_path, val_size=5)
    assert d.num_classes == 100 and d.shape == (3, 32, 32) and len(d.test) == 20


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "extracted"])
def test_cifar_batch_that_is_not_a_pickle_names_its_path(tmp_path, packed):
    source = write_cifar(tmp_path, cifar_files(override={"data_batch_2": b"these are not the bytes of a pickle\n" * 9}),
                         packed=packed)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path, val_size=10)
    assert named(packed, source, "data_batch_2") in str(e.value) and "not a CIFAR pickle" in str(e.value)
    assert "\n" not in str(e.value)


def test_cifar_pickle_of_the_wrong_type_or_meta_without_names(tmp_path):
    source = write_cifar(tmp_path / "a", cifar_files(override={"data_batch_1": [1, 2, 3]}), packed=False)
    with pytest.raises(DataError, match=re.escape(str(source / "data_batch_1")) + ".*pickled list"):
        load_dataset("cifar10", tmp_path / "a", val_size=10)
    source = write_cifar(tmp_path / "b", cifar_files(override={"batches.meta": {b"names": []}}), packed=False)
    with pytest.raises(DataError, match=re.escape(str(source / "batches.meta")) + ".*label_names"):
        load_dataset("cifar10", tmp_path / "b", val_size=10)


# ---------------------------------------------------------------- decode cache

def cache_entry():
    (entry,) = [p for p in cache_dir().iterdir() if not p.name.startswith(".")]
    return entry


def leftovers():
    return [p.name for p in cache_dir().iterdir() if p.name.startswith(".")]


def test_cache_pixel_change_of_the_same_size_is_caught_and_rebuilt_in_the_same_call(tmp_path, capsys):
    make_mnist(tmp_path)
    first = load_dataset("mnist", tmp_path, val_size=10)
    f = cache_entry() / "train_x.npy"
    size = f.stat().st_size
    x = np.load(f, mmap_mode="r+")
    x[3, 0, 5, 5] ^= 0xFF  # one flipped pixel, the file's size unchanged
    x.flush()
    del x
    assert f.stat().st_size == size
    capsys.readouterr()
    again = load_dataset("mnist", tmp_path, val_size=10)
    warned = warnings_of(capsys.readouterr().err)
    assert any("train_x.npy does not match the checksum" in w and "rebuilding" in w for w in warned), warned
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.val.x, first.val.x)
    third = load_dataset("mnist", tmp_path, val_size=10)  # the rebuilt entry verifies: no warning
    assert "cache" not in capsys.readouterr().err and torch.equal(third.train.x, first.train.x)
    assert leftovers() == []


def test_cache_label_change_of_the_same_size_is_caught_and_rebuilt(tmp_path, capsys):
    make_mnist(tmp_path)
    first = load_dataset("mnist", tmp_path, val_size=10)
    y = np.load(cache_entry() / "test_y.npy", mmap_mode="r+")
    y[0] = 255
    y.flush()
    del y
    capsys.readouterr()
    again = load_dataset("mnist", tmp_path, val_size=10)
    assert "test_y.npy does not match the checksum" in capsys.readouterr().err
    assert torch.equal(again.test.y, first.test.y)


def test_cache_label_out_of_range_with_a_matching_checksum_is_an_error(tmp_path):
    from cnnlab.data.datasets import _checksum

    make_mnist(tmp_path)
    load_dataset("mnist", tmp_path, val_size=10)
    entry = cache_entry()
    y = np.load(entry / "test_y.npy")
    y[4] = 10
    np.save(entry / "test_y.npy", y)
    meta = json.loads((entry / "meta.json").read_text())
    meta["checksums"]["test_y"] = _checksum(y)  # written like this: the checksum cannot tell
    (entry / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=re.escape(str(entry / "test_y.npy")) + r" \(test split\) has label 10 .*10 classes"):
        load_dataset("mnist", tmp_path, val_size=10)
    assert not entry.exists()  # removed: the next load decodes the sources again
    assert len(load_dataset("mnist", tmp_path, val_size=10).test) == 20


def test_cache_truncated_or_without_checksums_is_rebuilt_in_the_same_call(tmp_path, capsys):
    make_mnist(tmp_path)
    first = load_dataset("mnist", tmp_path, val_size=10)
    f = cache_entry() / "train_x.npy"
    f.write_bytes(f.read_bytes()[:1000])
    capsys.readouterr()
    again = load_dataset("mnist", tmp_path, val_size=10)
    assert "cannot be read" in capsys.readouterr().err and torch.equal(again.train.x, first.train.x)
    meta_file = cache_entry() / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["checksums"], meta["format"]  # as an older cnnlab wrote it
    meta_file.write_text(json.dumps(meta))
    third = load_dataset("mnist", tmp_path, val_size=10)
    assert "no checksums" in capsys.readouterr().err and torch.equal(third.train.x, first.train.x)
    assert "checksums" in json.loads(meta_file.read_text()) and leftovers() == []


def test_cache_meta_change_is_caught(tmp_path, capsys):
    make_mnist(tmp_path)
    load_dataset("mnist", tmp_path, val_size=10)
    meta_file = cache_entry() / "meta.json"
    meta_file.write_text(meta_file.read_text().replace('"3"', '"8"', 1))  # a class renamed, same size
    capsys.readouterr()
    d = load_dataset("mnist", tmp_path, val_size=10)
    assert "meta.json does not match the checksum" in capsys.readouterr().err and d.classes[3] == "3"


def test_cache_rebuild_that_fails_leaves_no_half_written_entry(tmp_path, monkeypatch):
    make_mnist(tmp_path)
    load_dataset("mnist", tmp_path, val_size=10)
    entry = cache_entry()
    before = {p.name: p.read_bytes() for p in entry.iterdir()}
    x = np.load(entry / "train_x.npy", mmap_mode="r+")
    x[0, 0, 0, 0] ^= 1
    x.flush()
    del x
    damaged = {p.name: p.read_bytes() for p in entry.iterdir()}
    assert damaged != before
    real_save, calls = np.save, []

    def failing_save(path, arr, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_save(path, arr, *a, **k)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError):
        load_dataset("mnist", tmp_path, val_size=10)
    # the entry is what it was (and is still caught by its checksum), no temporary folder is left
    assert {p.name: p.read_bytes() for p in entry.iterdir()} == damaged and leftovers() == []


def test_cache_entries_honour_the_umask(tmp_path):
    import os
    import stat

    make_mnist(tmp_path)
    old = os.umask(0o002)  # a group sharing the cache; tempfile.mkdtemp would make the entry 0700
    try:
        load_dataset("mnist", tmp_path, val_size=10)
    finally:
        os.umask(old)
    entry = cache_entry()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o775
    assert {stat.S_IMODE(p.stat().st_mode) for p in entry.iterdir()} == {0o664}


# ---------------------------------------------------------------- image folders

def save_image(path, array, fmt=None):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path, fmt)


def make_folder(root, classes=("cat", "dog"), n_train=4, n_test=2, size=(8, 10), seed=0):
    """root/{train,test}/<class>/<i>.png, RGB, size (H, W)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            for i in range(n):
                save_image(root / split / c / f"{i}.png", rng.integers(0, 256, (*size, 3)))
    return root


def test_colour_mode_is_the_majority_and_the_others_are_converted(tmp_path, capsys):
    root = make_folder(tmp_path / "f")
    gray = np.random.default_rng(5).integers(0, 256, (8, 10))
    save_image(root / "train" / "cat" / "0.png", gray)  # the first image is grayscale, the other 11 RGB
    d = load_dataset(f"imagefolder:{root}", val_size=0)
    assert d.shape == (3, 8, 10)
    warned = warnings_of(capsys.readouterr().err)
    assert len(warned) == 1 and "1 of 12 images are grayscale and were converted to RGB" in warned[0]
    i = int((d.train.y == 0).nonzero()[0])  # train/cat/0.png: its channel repeated three times
    assert all(torch.equal(d.train.x[i, c], torch.from_numpy(gray.astype(np.uint8))) for c in range(3))


def test_grayscale_majority_converts_the_colour_images(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "g"
    for split in ("train", "test"):
        for c in ("a", "b"):
            for i in range(3):
                save_image(root / split / c / f"{i}.png", rng.integers(0, 256, (6, 6)))
    rgb = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    save_image(root / "test" / "b" / "2.png", rgb)
    d = load_dataset(f"imagefolder:{root}", val_size=0)
    assert d.shape == (1, 6, 6)
    assert "1 of 12 images are colour and were converted to grayscale" in capsys.readouterr().err
    assert torch.equal(d.test.x[-1, 0], torch.from_numpy(np.array(Image.fromarray(rgb).convert("L"))))


def test_hidden_entries_are_ignored(tmp_path, capsys):
    root = make_folder(tmp_path / "f")
    save_image(root / "train" / ".ipynb_checkpoints" / "0.png", np.zeros((8, 10, 3)))
    save_image(root / "test" / ".ipynb_checkpoints" / "0.png", np.zeros((8, 10, 3)))
    (root / "train" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "train" / "dog" / "._0.png").write_bytes(b"\0\5\26\7AppleDouble")  # a macOS resource fork
    d = load_dataset(f"imagefolder:{root}", val_size=0)
    assert d.classes == ["cat", "dog"] and len(d.train) == 8
    assert d.train.y.bincount().tolist() == [4, 4] and d.test.y.tolist() == [0] * 2 + [1] * 2
    assert warnings_of(capsys.readouterr().err) == []


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_class_folder_is_an_error_naming_it(tmp_path, split):
    root = make_folder(tmp_path / "f")
    for p in (root / split / "dog").iterdir():
        p.unlink()
    (root / split / "dog" / ".DS_Store").write_bytes(b"x")
    (root / split / "dog" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=re.escape(f"class folder {root / split / 'dog'} holds no ")):
        load_dataset(f"imagefolder:{root}")


def test_skipped_files_are_counted_in_one_warning_line(tmp_path, capsys):
    root = make_folder(tmp_path / "f")
    for name in ("a.tif", "b.TIF", "notes.txt"):
        (root / "train" / "cat" / name).write_bytes(b"x")
    save_image(root / "train" / "dog" / "more" / "0.png", np.zeros((8, 10, 3)))
    (root / "test" / "README").write_text("x")
    d = load_dataset(f"imagefolder:{root}", val_size=0)
    assert len(d.train) == 8 and len(d.test) == 4
    warned = warnings_of(capsys.readouterr().err)
    assert len(warned) == 1, warned
    assert "skipped 3 files with other extensions (.tif: 2, .txt: 1)" in warned[0]
    assert "1 folder inside class folders (e.g. train/dog/more)" in warned[0]
    assert "1 file outside class folders (e.g. test/README)" in warned[0]


@pytest.mark.parametrize("which", ["first", "later"])
def test_corrupt_image_is_an_error_naming_it(tmp_path, which):
    root = make_folder(tmp_path / "f")
    if which == "first":
        bad = root / "train" / "cat" / "0.png"
        bad.write_bytes(b"this is not a PNG file")
    else:
        bad = root / "test" / "dog" / "1.jpg"
        save_image(bad, np.random.default_rng(0).integers(0, 256, (8, 10, 3)), "JPEG")
        bad.write_bytes(bad.read_bytes()[:300])  # truncated
    with pytest.raises(DataError, match=re.escape(f"{bad} is not a readable image")) as e:
        load_dataset(f"imagefolder:{root}")
    assert "\n" not in str(e.value)


def test_corrupt_first_image_is_one_error_line_from_the_cli(tmp_path, cli):
    root = make_folder(tmp_path / "f")
    (root / "train" / "cat" / "0.png").write_bytes(b"\x89PNG but nothing more")
    r = cli("data", "info", f"imagefolder:{root}", env={"CNNLAB_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnlab: error: ") and str(root / "train" / "cat" / "0.png") in lines[0]


def test_train_and_test_need_the_same_class_folders(tmp_path):
    root = make_folder(tmp_path / "f", classes=("cat", "dog", "eel"))
    for p in (root / "test" / "eel").iterdir():
        p.unlink()
    (root / "test" / "eel").rmdir()
    with pytest.raises(DataError, match=r"same class folders \(test/ lacks \['eel'\]\)"):
        load_dataset(f"imagefolder:{root}")
    save_image(root / "test" / "eel" / "0.png", np.zeros((8, 10, 3)))
    save_image(root / "test" / "fox" / "0.png", np.zeros((8, 10, 3)))
    with pytest.raises(DataError, match=r"only test/ has \['fox'\]"):
        load_dataset(f"imagefolder:{root}")


def test_images_of_another_size_are_an_error_naming_the_file(tmp_path):
    root = make_folder(tmp_path / "f")
    save_image(root / "test" / "dog" / "1.png", np.zeros((9, 10, 3)))
    with pytest.raises(DataError, match=re.escape(f"{root / 'test' / 'dog' / '1.png'} is 10x9 but the folder's images are 10x8")):
        load_dataset(f"imagefolder:{root}")
