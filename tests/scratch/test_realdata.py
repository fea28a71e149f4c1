"""The scratch engine through the trainer on real CIFAR-10: 100 images are learned by heart."""

import os

import pytest

from cnnlab.config import TrainConfig

pytestmark = pytest.mark.realdata


def test_scratch_engine_overfits_100_cifar10_images(real_dataset, tmp_path):
    from cnnlab.train.loop import train

    real_dataset("cifar10")  # skips with the reason when the data is missing
    cfg = TrainConfig(engine="scratch", model="c16k3-relu-p2-fc10", dataset="cifar10", subset=100, val_size=100,
                      epochs=25, batch_size=50, optimizer="adam", lr=3e-3, eval_batch_size=2000,
                      data_dir=os.environ.get("CNNLAB_DATA_DIR"), out=str(tmp_path / "run"))
    summary = train(cfg, quiet=True)
    assert summary["engine"] == "scratch"
    assert summary["final_train_acc"] == 1.0
    # The scratch-trained weights, loaded into the PyTorch model from the checkpoint, reproduce it:
    # every one of the 100 training images right, and the test accuracy the run reported (to within
    # 2 of 10,000 images: the two engines' float sums differ), above chance (10 %).
    from cnnlab.workflows.measure.evaluate import evaluate_run

    train_ev = evaluate_run(cfg.out, "train", "last", cfg.data_dir, device="cpu", write=False)
    assert (train_ev["count"], train_ev["accuracy"]) == (100, 1.0)
    test_ev = evaluate_run(cfg.out, "test", "best", cfg.data_dir, device="cpu", write=False)
    assert test_ev["count"] == 10000 and test_ev["accuracy"] == pytest.approx(summary["test_acc"], abs=2e-4)
    assert summary["test_acc"] > 0.15
