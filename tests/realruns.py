"""Short real-data runs that several test modules train once per module.

    @pytest.fixture(scope="module")
    def short_run(tmp_path_factory):
        return mnist_lenet(tmp_path_factory, "--subset", "2000")

`mnist_lenet` skips the test when MNIST cannot be read (fails instead under CNNLAB_REQUIRE_DATA=1) and
trains LeNet-5 on it for one epoch on the CPU, with the data directory the tests read.
"""

from __future__ import annotations

import os

import pytest

from cnnlab.cli import main


def mnist_lenet(tmp_path_factory, *args) -> "os.PathLike":
    """A run directory of LeNet-5 after one epoch on MNIST (`args`: more `cnnlab train` flags)."""
    from cnnlab.data import load_dataset
    from cnnlab.errors import DataError

    data_dir = os.environ.get("CNNLAB_DATA_DIR")
    try:
        load_dataset("mnist", data_dir)
    except DataError as e:
        if os.environ.get("CNNLAB_REQUIRE_DATA") == "1":
            pytest.fail(f"MNIST is required here: {e}")
        pytest.skip(f"MNIST unavailable ({e}); set CNNLAB_DATA_DIR to a folder holding mnist/")
    out = tmp_path_factory.mktemp("runs") / "lenet"
    argv = ["train", "--model", "lenet5", "--dataset", "mnist", "--val-size", "500", "--epochs", "1",
            "--batch-size", "64", "--device", "cpu", "--out", str(out), "--quiet", *args]
    assert main(argv + (["--data-dir", data_dir] if data_dir else [])) == 0
    return out
