"""What the competition server's tests share: a competition file, models as teams make them, waiting.

    path = write_competition(tmp_path, workers=1, daily_limit=3)     # on DATASET (synthetic, MNIST-shaped)
    model = trained_model(tmp_path_factory)        # LeNet-5 trained 4 epochs, `cnnlab export`ed: bytes
    data = onnx_model("lenet5", (3, 32, 32))       # an untrained export of any model, shape, classes
    sub = wait_done(lambda: client.get(...).json())    # until its status is scored or failed

The dataset is synthetic (seeded, learnable, 1000 test images of 1x28x28, classes class0-class9),
so these tests need no download and score in well under a second; the MNIST demo and the load
benchmark run on real MNIST.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from cnnlab.cli import main

DATASET = "synthetic:shape=1x28x28,classes=10,train=2000,test=1000"
CLASSES = [f"class{i}" for i in range(10)]
SLOW = "c192k3-relu-c192k3-relu-c192k3-relu-fc10"  # 600 MB activations per layer for 1000 images
LONG = "c64k3-relu-" * 20 + "fc10"  # 200 MB activations, 1.2 TFLOP for 1000 images: over 10 s even at 100 GFLOP/s


def write_competition(folder, **fields) -> Path:
    """A competition file in `folder` (the server's storage beside it); `fields` replace the defaults."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d = {"name": "test-cup", "title": "Test cup", "dataset": DATASET, "deadline": "2099-01-01T00:00:00Z",
         "daily_limit": 5, "hidden_fraction": 0.3, "rate_limit": 1000, "workers": 0, "time_limit": 60,
         "storage": "data", **fields}
    path = folder / "competition.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def trained_model(tmp_path_factory) -> bytes:
    """model.onnx of LeNet-5 trained on DATASET for 4 epochs (about 96% test accuracy), made once per
    test session with `cnnlab train` and `cnnlab export`, as a team makes its submission."""
    run = tmp_path_factory.getbasetemp() / "competition-lenet5"
    model = run / "exports" / "model.onnx"
    if not model.exists():
        assert main(["train", "--model", "lenet5", "--dataset", DATASET, "--epochs", "4", "--lr", "5e-3",
                     "--threads", "1", "--out", str(run)]) == 0
        assert main(["export", str(run), "--format", "onnx"]) == 0
    return model.read_bytes()


def onnx_model(model: str = "lenet5", shape=(1, 28, 28), classes=None, seed: int = 0) -> bytes:
    """An export (untrained, seeded weights) of any registered model or spec, with cnnlab's metadata."""
    import torch

    from cnnlab.build import build_for
    from cnnlab.workflows.export import model_metadata, onnx_bytes

    classes = classes or CLASSES
    torch.manual_seed(seed)
    net = build_for({"model": model}, shape, len(classes)).eval()
    meta = model_metadata(model, shape, classes, [0.5] * shape[0], [0.25] * shape[0], "onnx")
    return onnx_bytes(net, meta)


def wait_done(fetch, timeout: float = 60, statuses=("scored", "failed")) -> dict:
    """Poll `fetch()` (a submission's JSON) until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        sub = fetch()
        if sub["status"] in statuses:
            return sub
        assert time.monotonic() < deadline, f"still {sub['status']} after {timeout} s: {sub}"
        time.sleep(0.1)
