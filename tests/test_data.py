import gzip
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch

from cnnlab.data import load_dataset
from cnnlab.data.augment import cutout, flip, parse_augment, random_crop
from cnnlab.data.loader import BatchLoader
from cnnlab.errors import CnnlabError, DataError


def write_idx(path, array, magic=None):
    array = np.asarray(array, np.uint8)
    header = struct.pack(">I", magic if magic is not None else 0x0800 + array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def make_mnist_dir(root, n_train=600, n_test=100, seed=0):
    rng = np.random.default_rng(seed)
    d = root / "mnist"
    d.mkdir(parents=True)
    write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))
    return d


def make_cifar_tar(path, n=20):
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        def add(name, obj):
            blob = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for i in range(1, 6):
            add(f"data_batch_{i}", {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))})
        add("test_batch", {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))})
        add("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})


def test_idx_files_load_with_seeded_split(tmp_path):
    make_mnist_dir(tmp_path)
    d = load_dataset("mnist", tmp_path, val_size=100, seed=3)
    assert d.shape == (1, 28, 28) and len(d.train) == 500 and len(d.val) == 100 and len(d.test) == 100
    assert d.train.x.dtype == torch.uint8 and d.train.y.dtype == torch.int64
    again = load_dataset("mnist", tmp_path, val_size=100, seed=3)
    assert torch.equal(d.val.x, again.val.x)
    other = load_dataset("mnist", tmp_path, val_size=100, seed=4)
    assert not torch.equal(d.val.y, other.val.y)
    assert len(load_dataset("mnist", tmp_path, val_size=100, subset=50).train) == 50


def test_local_copy_with_other_checksum_warns_and_loads(tmp_path, capsys):
    make_mnist_dir(tmp_path)
    load_dataset("mnist", tmp_path)
    assert "differs from the official file" in capsys.readouterr().err


def test_cifar_archive_packed_and_extracted(tmp_path):
    (tmp_path / "cifar10").mkdir()
    make_cifar_tar(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    d = load_dataset("cifar10", tmp_path, val_size=10)
    assert d.shape == (3, 32, 32) and len(d.train) + len(d.val) == 100 and d.classes[3] == "c3"
    extracted = tmp_path / "x"
    (extracted / "cifar10").mkdir(parents=True)
    with tarfile.open(tmp_path / "cifar10" / "cifar-10-python.tar.gz") as tar:
        tar.extractall(extracted / "cifar10", filter="data")
    e = load_dataset("cifar10", extracted, val_size=10)
    assert torch.equal(e.test.x, d.test.x)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")


def test_wrong_idx_magic(tmp_path):
    d = make_mnist_dir(tmp_path)
    write_idx(d / "train-images-idx3-ubyte.gz", np.zeros((5, 28, 28)), magic=0x0801)
    with pytest.raises(DataError, match="magic number 0x00000801"):
        load_dataset("mnist", tmp_path)


def test_truncated_gzip(tmp_path):
    d = make_mnist_dir(tmp_path)
    f = d / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", tmp_path)


def test_corrupt_cifar_archive(tmp_path):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b" + b"not really" * 50)
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("cifar10", tmp_path)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls in ("dog", "cat"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    d = load_dataset(f"imagefolder:{tmp_path}", val_size=4)
    assert d.classes == ["cat", "dog"] and d.shape == (3, 8, 10) and len(d.test) == 8
    assert d.test.y.tolist() == [0] * 4 + [1] * 4


def test_synthetic_options():
    d = load_dataset("synthetic:shape=1x12x12,classes=3,train=90,test=30", val_size=9)
    assert d.shape == (1, 12, 12) and d.num_classes == 3 and len(d.train) == 81
    with pytest.raises(DataError, match="bad synthetic option"):
        load_dataset("synthetic:colour=red")


def test_crop_shifts_content_and_pads_zero():
    x = torch.arange(1, 2 * 3 * 6 * 6 + 1, dtype=torch.float32).view(2, 3, 6, 6)
    out = random_crop(x, torch.Generator().manual_seed(1), pad=2)
    for i in range(2):
        nz = out[i, 0].nonzero()
        r0, c0 = nz.min(0).values.tolist()
        r1, c1 = nz.max(0).values.tolist()
        window = out[i, :, r0:r1 + 1, c0:c1 + 1]
        # the visible part is an exact, unscaled window of the input
        src_r = int((window[0, 0, 0] - 1 - i * 108) // 6)
        src_c = int((window[0, 0, 0] - 1 - i * 108) % 6)
        assert torch.equal(window, x[i, :, src_r:src_r + window.shape[1], src_c:src_c + window.shape[2]])


def test_flip_and_cutout():
    x = torch.randn(64, 3, 8, 8)
    out = flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54
    c = cutout(torch.ones(16, 1, 10, 10), torch.Generator().manual_seed(0), size=4)
    zeros = (c == 0).sum(dim=(1, 2, 3))
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at the border


def test_bad_augment_string():
    with pytest.raises(CnnlabError, match="unknown augmentation 'rotate'"):
        parse_augment("crop+rotate")


def test_loader_order_is_a_function_of_seed_epoch_batch():
    d = load_dataset("synthetic:train=300,test=10", val_size=30)
    loader = BatchLoader(d.train, 32, d.mean, d.std, shuffle=True, seed=5, augment="crop+flip+cutout")
    full = list(loader.epoch(2))
    tail = list(loader.epoch(2, start=4))
    assert len(full) == 9 and all(torch.equal(a[0], b[0]) for a, b in zip(full[4:], tail))
    assert torch.equal(torch.cat([y for _, y in full]).sort().values, d.train.y.sort().values)
    assert not torch.equal(full[0][1], next(iter(loader.epoch(3)))[1])


def test_normalised_batches_have_zero_mean_unit_std():
    d = load_dataset("synthetic:train=500,test=10", val_size=0)
    x = torch.cat([x for x, _ in BatchLoader(d.train, 100, d.mean, d.std).epoch()])
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.02


@pytest.mark.parametrize("augment", ["crop", "flip", "cutout:5", "crop:2+flip", "crop:4+flip+cutout:8",
                                     "translate:3+cutout:4"])
def test_fused_cpu_kernel_equals_the_torch_operations(augment):
    from cnnlab.data.augment import apply_augment, split_pixel_ops
    from cnnlab.data.fused import fusable, fused_batch
    from cnnlab.data.loader import _generator

    d = load_dataset("synthetic:shape=3x12x10,train=64,test=1", val_size=0)
    loader = BatchLoader(d.train, 64, d.mean, d.std, augment=augment)
    assert loader.fused and fusable(loader.ops)
    x = d.train.x
    pixel, rest = split_pixel_ops(loader.ops)
    gen = _generator(3, 1, 4, 7)
    reference = apply_augment(rest, loader.normalize(apply_augment(pixel, x, gen)), gen)
    fused = fused_batch(x, loader.ops, _generator(3, 1, 4, 7), loader.mean, loader.inv_std)
    torch.testing.assert_close(fused, reference, rtol=1e-6, atol=1e-6)


def test_unusual_order_uses_the_torch_operations():
    d = load_dataset("synthetic:train=40,test=1", val_size=0)
    assert not BatchLoader(d.train, 8, d.mean, d.std, augment="cutout+crop").fused
    assert not BatchLoader(d.train, 8, d.mean, d.std, augment="flip+flip").fused
