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
    # MNIST's well-known training-set statistics (this copy is bit-identical to the official files)
    assert d.mean[0] == pytest.approx(0.1307, abs=5e-4) and d.std[0] == pytest.approx(0.3081, abs=5e-4)


def test_cifar10_python_archive(real_dataset):
    d = real_dataset("cifar10")
    assert d.shape == (3, 32, 32) and d.classes == CIFAR10_CLASSES
    assert len(d.train) + len(d.val) == 50000 and len(d.test) == 10000
    assert d.test.y.bincount().tolist() == [1000] * 10
    total = d.train.y.bincount(minlength=10) + d.val.y.bincount(minlength=10)
    assert total.tolist() == [5000] * 10
    # the official training set's per-channel statistics (RGB order); the JPEG-re-encoded copy in
    # the shared data folder is within 0.002 of them, a channel swap or a scaling slip is far off
    assert d.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=3e-3)
    assert d.std == pytest.approx((0.2470, 0.2435, 0.2616), abs=3e-3)


def test_short_lenet5_run_on_real_mnist(real_dataset, data_dir, tmp_path):
    real_dataset("mnist")  # skip or fail early with the reason if MNIST is unavailable
    s = train(TrainConfig(model="lenet5", dataset="mnist", data_dir=data_dir, epochs=1, batch_size=64,
                          lr=2e-3, out=str(tmp_path / "run")), quiet=True)
    assert s["test_acc"] > 0.97, s
    # an independent evaluation of the saved best weights gives the same figure on all 10,000 images
    # (to within 2 images: the run may have trained and evaluated on a GPU)
    from cnnlab.workflows.measure.evaluate import evaluate_run

    ev = evaluate_run(tmp_path / "run", "test", data_dir=data_dir, device="cpu", write=False)
    assert ev["count"] == s["test_count"] == 10000
    assert ev["accuracy"] == pytest.approx(s["test_acc"], abs=2e-4)
