"""Real datasets, read from the data directory in their official formats."""

import pytest

from cnnlab.config import TrainConfig
from cnnlab.train.loop import train

pytestmark = pytest.mark.realdata

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_mnist_official_files(real_dataset):
    d = real_dataset("mnist")
    assert d.shape == (1, 28, 28) and d.classes == [str(i) for i in range(10)]
    assert len(d.train) + len(d.val) == 60000 and len(d.val) == 5000 and len(d.test) == 10000
    assert d.test.y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert 0.12 < d.mean[0] < 0.14 and 0.30 < d.std[0] < 0.32


def test_cifar10_python_archive(real_dataset):
    d = real_dataset("cifar10")
    assert d.shape == (3, 32, 32) and d.classes == CIFAR10_CLASSES
    assert len(d.train) + len(d.val) == 50000 and len(d.test) == 10000
    assert d.test.y.bincount().tolist() == [1000] * 10
    total = d.train.y.bincount(minlength=10) + d.val.y.bincount(minlength=10)
    assert total.tolist() == [5000] * 10


def test_short_lenet5_run_on_real_mnist(real_dataset, data_dir, tmp_path):
    real_dataset("mnist")  # skip or fail early with the reason if MNIST is unavailable
    s = train(TrainConfig(model="lenet5", dataset="mnist", data_dir=data_dir, epochs=1, batch_size=64,
                          lr=2e-3, out=str(tmp_path / "run")), quiet=True)
    assert s["test_acc"] > 0.97, s
