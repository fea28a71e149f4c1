"""examples/mnist_assignment.ipynb runs top to bottom on real MNIST (its quick setting: a subset,
one epoch), executed by nbclient in a fresh kernel in a scratch folder, and leaves what it says it
leaves: the run directories, their plots and the two reports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "mnist_assignment.ipynb"


def test_the_assignment_notebook_runs(tmp_path, real_dataset, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    real_dataset("mnist")  # skip or fail early, with the reason, when MNIST is not at hand
    monkeypatch.setenv("CNNLAB_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]
    assert len(images) == 9  # loss, accuracy, filters, confusion, mistakes, 3 optimizer plots, the profile
    out = tmp_path / "runs" / "assignment"
    for name in ("lenet5-adam", "lenet5-sgd", "lenet5-momentum"):
        assert (out / name / "summary.json").is_file(), name
    assert len(list((out / "lenet5-adam" / "plots").glob("*.png"))) == 6
    assert (out / "lenet5-adam" / "report.html").is_file() and (out / "optimizers.html").is_file()
    assert (out / "lenet5-adam" / "bench.json").is_file() and (out / "lenet5-adam" / "score.json").is_file()
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "test accuracy" in text and "competition points" in text and os.cpu_count() is not None
