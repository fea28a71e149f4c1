"""Reports of real MNIST runs: the README's commands for three runs (LeNet-5, an MLP, a ConvNet)
and a study, the filter grids of real models, and the HTML opened in a real headless Chromium
(no console errors, no failed or outside requests, a non-blank screenshot, a sort click that
reorders the comparison table).

The browser test needs Debian's `chromium` (CI installs it); without one it is skipped with the
reason, unless CNNLAB_REQUIRE_BROWSER=1, where its absence is a failure."""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnlab.cli import main
from cnnlab.dirs import RunDir
from tests.test_reports import first_conv_filters, self_contained, tiles_in_png

pytestmark = pytest.mark.realdata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The README's commands, made short: one epoch on 2,000 training images.
QUICK = ["--epochs", "1", "--subset", "2000", "--val-size", "1000", "--batch-size", "64", "--quiet"]
MODELS = {"lenet5": "lenet5", "mlp": "mlp", "convnet": "c32k3-relu-p2-c64k3-relu-p2-fc128-relu"}


def cli_json(capsys, *argv):
    capsys.readouterr()
    assert main([*map(str, argv), "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def mnist_runs(tmp_path_factory, real_dataset_module, data_dir):
    """The README's three MNIST runs: LeNet-5, an MLP and a ConvNet."""
    base = tmp_path_factory.mktemp("mnist")
    out = {}
    for name, model in MODELS.items():
        out[name] = base / name
        args = ["train", "--model", model, "--dataset", "mnist", *QUICK, "--out", str(out[name])]
        if data_dir:
            args += ["--data-dir", data_dir]
        assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def real_dataset_module():
    from tests.conftest import _real

    return _real("mnist")


def test_three_mnist_runs_compared(mnist_runs, tmp_path, capsys):
    out = tmp_path / "comparison.html"
    printed = cli_json(capsys, "report", *mnist_runs.values(), "--out", out)
    assert printed["kind"] == "comparison" and printed["runs"] == list(MODELS) and printed["notes"] == []
    html = out.read_text()
    self_contained(html)
    assert re.findall(r'<tr data-run="([^"]+)">', html) == list(MODELS)
    for name, run in mnist_runs.items():
        s = RunDir(run).read_summary()
        row = html.split(f'<tr data-run="{name}">')[1].split("</tr>")[0]
        assert f"<td>{MODELS[name]}</td>" in row and f">{100 * s['test_acc']:.2f}<" in row
        assert s["test_acc"] > 0.5
    lenet_row = html.split('<tr data-run="lenet5">')[1].split("</tr>")[0]
    assert ">61.71k<" in lenet_row and ">416.52k<" in lenet_row  # LeNet-5's parameters and MACs on 1x28x28


def test_real_filter_grids(mnist_runs, capsys):
    for name, expected in (("lenet5", 6), ("convnet", 32)):
        printed = cli_json(capsys, "plot", mnist_runs[name])
        assert set(printed["files"]) == {"loss", "accuracy", "lr", "filters", "confusion", "mistakes"}
        n, c = first_conv_filters(mnist_runs[name])
        assert (n, c) == (expected, 1)
        assert len(tiles_in_png(printed["files"]["filters"])) == n
        assert printed["test"]["count"] == 10000
    printed = cli_json(capsys, "plot", mnist_runs["mlp"], "--no-eval")
    assert "no convolution layer" in printed["notes"]["filters"]


def test_study_report(tmp_path, data_dir, real_dataset_module, capsys):
    """The README's study command on examples/mnist_models.yaml, made short, then its report."""
    study = yaml.safe_load(open(os.path.join(ROOT, "examples", "mnist_models.yaml")))
    study["base"].update(epochs=1, subset=1000, val_size=500, batch_size=64)
    if data_dir:
        study["base"]["data_dir"] = data_dir
    del study["experiments"]["convnet_augment"]
    path = tmp_path / "mnist_models.yaml"
    path.write_text(yaml.safe_dump(study))
    out = tmp_path / "study-mnist"
    assert main(["study", str(path), "--seeds", "1", "--out", str(out)]) == 0
    printed = cli_json(capsys, "report", out)
    assert printed["path"] == str(RunDir(out).report)
    assert printed["runs"] == ["convnet/seed0", "mlp/seed0"]
    html = RunDir(out).report.read_text()
    self_contained(html)
    assert 'id="experiments"' in html and "MLP vs ConvNet" in html


# ---- the browser ----------------------------------------------------------------------------

def non_blank(png: bytes):
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert img.shape[0] >= 800 and img.shape[1] >= 1200
    ink = (np.abs(img - 255).sum(axis=2) > 60).mean()  # clearly not white
    colours = len(np.unique(img.reshape(-1, 3) // 8, axis=0))
    assert ink > 0.03 and colours > 30, (ink, colours)


def test_run_report_in_a_browser(mnist_runs, browser, capsys):
    printed = cli_json(capsys, "report", mnist_runs["lenet5"])
    page = browser.open(printed["path"])
    assert page.problems() == []
    assert [u for u in page.requests() if not u.startswith("data:")] == [page.url]  # the file, nothing else
    assert page.evaluate("document.title") == "cnnlab run report: lenet5"
    # every embedded figure decoded: six plots, each with its natural size
    sizes = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == 6 and all(ok and w > 100 and h > 100 for ok, w, h in sizes)
    non_blank(page.screenshot())


def column_values(page, key):
    return page.evaluate(
        "(() => { const t = document.getElementById('comparison');"
        f" const col = Array.from(t.tHead.rows[0].cells).findIndex(c => c.dataset.key === {json.dumps(key)});"
        " return Array.from(t.tBodies[0].rows).map(r => [r.dataset.run, parseFloat(r.cells[col].dataset.value)]);"
        " })()")


def test_comparison_sorts_on_click(mnist_runs, browser, tmp_path, capsys):
    out = tmp_path / "comparison.html"
    cli_json(capsys, "report", *mnist_runs.values(), "--out", out)
    page = browser.open(out)
    assert page.problems() == []
    before = column_values(page, "test_acc")
    assert [run for run, _ in before] == list(MODELS)
    values = [v for _, v in before]
    assert len(set(values)) == 3, before  # three different test accuracies to sort

    page.click('#comparison th[data-key="test_acc"]')
    ascending = column_values(page, "test_acc")
    assert [v for _, v in ascending] == sorted(values)
    assert page.evaluate("document.querySelector('#comparison th[data-key=\"test_acc\"]').getAttribute('aria-sort')") \
        == "ascending"
    page.click('#comparison th[data-key="test_acc"]')
    descending = column_values(page, "test_acc")
    assert [v for _, v in descending] == sorted(values, reverse=True)
    assert [r for r, _ in descending] == [r for r, _ in ascending][::-1]
    assert [r for r, _ in before] != [r for r, _ in ascending] or [r for r, _ in before] != [r for r, _ in descending]
    # a text column sorts by name
    page.click('#comparison th[data-key="run"]')
    assert [r for r, _ in column_values(page, "test_acc")] == sorted(MODELS)
    assert page.problems() == []
    non_blank(page.screenshot())
