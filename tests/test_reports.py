"""`cnnlab plot`, `cnnlab report`, `--tensorboard` and the Python API, on runs trained here on
synthetic data (no real dataset, no network): every PNG and its size, the filter grid's tiles
counted in the image, byte-identical renders, the HTML's self-containment, the comparison table,
Markdown, and the bad inputs (no metrics, a crashed run, a scratch-engine run, no conv layer)."""

from __future__ import annotations

import json
import re
import shutil
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.dirs import PLOT_FILES, RunDir
from cnnlab.train.loop import train
from cnnlab.workflows.report import CURVE_SIZE, DPI, FILTER_BACKGROUND

DATASET = "synthetic:shape=3x16x16,classes=4,train=320,test=64"
GREY = "synthetic:shape=1x12x12,classes=3,train=240,test=48"
CONV = "c8k3-relu-p2-c16k3-relu-p2-fc32-relu"


def _train(out, **kw):
    cfg = dict(dataset=DATASET, model=CONV, epochs=2, batch_size=16, lr=1e-2, seed=1, threads=1, device="cpu",
               out=str(out))
    cfg.update(kw)
    return train(TrainConfig(**cfg), quiet=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four runs: a colour conv net, an MLP (no conv layer), a scratch-engine conv net on grey
    images, and a run that diverged in its second epoch (no summary.json)."""
    base = tmp_path_factory.mktemp("reports")
    out = {"conv": base / "conv", "mlp": base / "mlp", "scratch": base / "scratch", "crashed": base / "crashed"}
    _train(out["conv"])
    _train(out["mlp"], model="fc32-relu")
    _train(out["scratch"], engine="scratch", backend="numpy", dataset=GREY, model="c6k3-relu-p2-fc12-relu", lr=0.05,
           optimizer="sgd")
    from cnnlab.train.loop import TrainingDiverged

    with pytest.raises(TrainingDiverged):
        _train(out["crashed"], epochs=3, optimizer="sgd", lr=0.01, schedule="step",
               schedule_args={"step_epochs": 1, "gamma": 1e30})
    return out


def cli_json(capsys, *argv):
    capsys.readouterr()
    assert main([*map(str, argv), "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def copy_run(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("plots", "report.*"))
    return dst


# ---- counting the filter grid's tiles in the PNG ----------------------------------------------

def tiles_in_png(path) -> list[tuple[int, int, int, int]]:
    """(left, top, width, height) of every large region that differs from the filter grid's
    background: one per tile (text glyphs are small and left out)."""
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    bg = np.array([int(FILTER_BACKGROUND[i:i + 2], 16) for i in (1, 3, 5)])
    mask = np.abs(img - bg).sum(axis=2) > 0
    seen = np.zeros_like(mask)
    h, w = mask.shape
    found = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, ys, xs = deque([(y0, x0)]), [y0, y0], [x0, x0]
        while queue:
            y, x = queue.popleft()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
                    ys[0], ys[1] = min(ys[0], ny), max(ys[1], ny)
                    xs[0], xs[1] = min(xs[0], nx), max(xs[1], nx)
        bw, bh = xs[1] - xs[0] + 1, ys[1] - ys[0] + 1
        if bw >= 20 and bh >= 20:
            found.append((xs[0], ys[0], bw, bh))
    return found


def first_conv_filters(run_dir) -> tuple[int, int]:
    from cnnlab.models.filters import first_conv
    from cnnlab.dirs import load_run

    conv = first_conv(load_run(run_dir).model)[1]
    return conv.out_channels, conv.in_channels


# ---- cnnlab plot ----------------------------------------------------------------------------

def test_plot_writes_every_png_at_its_size(runs, capsys):
    printed = cli_json(capsys, "plot", runs["conv"])
    rd = RunDir(runs["conv"])
    assert printed["notes"] == {}
    assert list(printed["files"]) == list(PLOT_FILES)
    for name in PLOT_FILES:
        assert printed["files"][name] == str(rd.plot_file(name))
        assert rd.plot_file(name).stat().st_size > 1000
    w, h = (round(v * DPI) for v in CURVE_SIZE)
    for name in ("loss", "accuracy", "lr"):
        assert Image.open(rd.plot_file(name)).size == (w, h) == (700, 420)
    # the confusion matrix of 4 classes is 6.2 x 5 in; the mistakes grid 9 x 7.6 in
    assert Image.open(rd.plot_file("confusion")).size == (620, 500)
    assert Image.open(rd.plot_file("mistakes")).size == (900, 760)
    # 8 filters in one row: 8 tiles of 0.75 in, 7 gaps of 0.12 in, 0.25 in each side; 1.85 in high
    assert Image.open(rd.plot_file("filters")).size == (734, 185)
    assert Image.open(rd.plot_file("filters")).mode == "RGBA"
    assert printed["test"]["count"] == 64


def test_filter_grid_has_one_tile_per_filter_in_colour(runs):
    from cnnlab.workflows.report import plot_run

    result = plot_run(runs["conv"], write=False)
    n, c = first_conv_filters(runs["conv"])
    assert (n, c) == (8, 3)
    fig = result.figures["filters"]
    assert fig.filter_count == n
    assert sum(1 for ax in fig.axes if ax.images) == n
    path = RunDir(runs["conv"]).plot_file("filters")
    from cnnlab.workflows.report import save_png

    save_png(fig, path)
    tiles = tiles_in_png(path)
    assert len(tiles) == n, tiles
    assert len({(w, h) for _, _, w, h in tiles}) == 1  # all the same size
    # colour: 3-channel filters make tiles whose pixels are not all grey
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert (np.abs(rgb[..., 0] - rgb[..., 1]) > 10).sum() > 50


def test_filter_grid_of_a_grey_scratch_run(runs):
    """The scratch engine's run plots too: its 6 filters over 1 channel are 6 grey tiles."""
    from cnnlab.workflows.report import plot_run

    result = plot_run(runs["scratch"])
    assert set(result.files) == set(PLOT_FILES) and result.notes == {}
    n, c = first_conv_filters(runs["scratch"])
    assert (n, c) == (6, 1)
    tiles = tiles_in_png(result.files["filters"])
    assert len(tiles) == n
    img = np.asarray(Image.open(result.files["filters"]).convert("RGB")).astype(int)
    for x, y, w, h in tiles:  # inside each tile (its edge pixels blend with the background): grey
        inner = img[y + 1:y + h - 1, x + 1:x + w - 1]
        assert (inner[..., 0] == inner[..., 1]).all() and (inner[..., 1] == inner[..., 2]).all()
    assert "PyTorch twin" in result.test.source
    assert result.test.count == 48


def test_many_filters_wrap_into_rows():
    import torch

    from cnnlab.workflows.report import filters_figure

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 20, 5))
    fig = filters_figure(model)
    assert fig.filter_count == 20 and sum(1 for ax in fig.axes if ax.images) == 20
    rows = {round(ax.get_position().y0, 6) for ax in fig.axes}
    assert len(rows) == 3  # 8 + 8 + 4


def test_same_run_same_png_bytes(runs, tmp_path):
    from cnnlab.workflows.report import plot_run

    # two copies of the run (titles name the directory, so both are called 'conv')
    a, b = copy_run(runs["conv"], tmp_path / "a" / "conv"), copy_run(runs["conv"], tmp_path / "b" / "conv")
    first, second = plot_run(a), plot_run(b)
    for name in PLOT_FILES:
        data = first.files[name].read_bytes()
        assert data == second.files[name].read_bytes(), name
        assert b"tIME" not in data and b"Software" not in data and b"Matplotlib" not in data
    assert plot_run(a).files["loss"].read_bytes() == first.files["loss"].read_bytes()


def test_plot_of_a_model_without_conv(runs, capsys):
    printed = cli_json(capsys, "plot", runs["mlp"])
    assert "filters" not in printed["files"]
    assert "no convolution layer" in printed["notes"]["filters"]
    assert not RunDir(runs["mlp"]).plot_file("filters").exists()
    assert {"loss", "accuracy", "lr", "confusion", "mistakes"} <= set(printed["files"])
    capsys.readouterr()
    assert main(["plot", str(runs["mlp"])]) == 0
    assert "no filters.png: the model (fc32-relu) has no convolution layer" in capsys.readouterr().out


def test_plot_without_test_data_uses_evaluation_json(runs, tmp_path, capsys):
    """A run whose dataset is gone: curves and filters still come; the confusion matrix comes from
    evaluation.json when `cnnlab evaluate` wrote one, and the mistakes get a note."""
    run = copy_run(runs["conv"], tmp_path / "moved")
    cli_json(capsys, "evaluate", run, "--device", "cpu")
    from cnnlab.workflows.report import plot_run

    def no_data(self, name="test", data_dir=None):
        raise CnnlabError("dataset gone: give --data-dir")

    from cnnlab.dirs import LoadedRun

    mp = pytest.MonkeyPatch()
    mp.setattr(LoadedRun, "split", no_data)
    try:
        result = plot_run(run)
    finally:
        mp.undo()
    assert {"loss", "accuracy", "lr", "filters", "confusion"} <= set(result.files)
    assert result.test.saved and "dataset gone" in result.notes["mistakes"]


# ---- cnnlab report: one run -----------------------------------------------------------------

def self_contained(html: str):
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html), "a reference to another file or URL"
    assert "http://" not in html and "https://" not in html and "@import" not in html
    assert html.count("<script>") == 1 and "src=" not in html.split("<script>")[1]


def test_report_of_one_run(runs, capsys):
    printed = cli_json(capsys, "report", runs["conv"])
    rd = RunDir(runs["conv"])
    assert printed["path"] == str(rd.report) and printed["kind"] == "run" and printed["notes"] == []
    html = rd.report.read_text()
    self_contained(html)
    for section in ("result", "curves", "filters", "confusion", "mistakes", "layers", "score", "bench", "hardware",
                    "config"):
        assert f'<section id="{section}">' in html
    for name in ("loss", "accuracy", "lr", "filters", "confusion", "mistakes"):
        assert f'<figure id="fig-{name}"><img src="data:image/png;base64,' in html
    summary = rd.read_summary()
    assert f"{100 * summary['test_acc']:.2f}%" in html
    # the layer table: one row per traced layer, totals equal to the run's parameter count
    assert f"<td class=num>{summary['params']:,}</td>" in html
    assert html.count('<table class="sortable" id="per-class">') == 1
    assert "no score.json yet" in html and "no bench.json yet" in html
    assert summary["environment"]["cpu_model"] in html


def test_report_shows_score_bench_and_time_to_accuracy(runs, tmp_path, capsys):
    run = copy_run(runs["conv"], tmp_path / "scored")
    score = cli_json(capsys, "score", run)
    bench = cli_json(capsys, "bench", run, "--devices", "cpu", "--batch-size", "16")
    rd = RunDir(run)
    summary = rd.read_summary()
    summary["time_to_accuracy"] = {"target": 0.5, "seconds": 1.25}
    rd.write_summary(summary)
    html = Path(cli_json(capsys, "report", run)["path"]).read_text()
    assert "Competition score" in html and f"<td>{score['points']} (error" in html
    assert f"{bench[0]['latency_ms_batch1']:.3f}" in html
    assert "1.2 s to 50%" in html


# ---- bad input: each gives a report of what exists, with notes --------------------------------

def test_report_of_a_run_with_no_metrics(tmp_path, capsys):
    """Killed before its first step was written: config.yaml and an empty checkpoints/ only."""
    rd = RunDir(tmp_path / "empty")
    rd.create()
    rd.write_config(TrainConfig(dataset=DATASET, model=CONV, out=str(rd.path)))
    printed = cli_json(capsys, "report", rd.path)
    html = rd.report.read_text()
    self_contained(html)
    notes = " ".join(printed["notes"])
    assert "no training step was recorded" in notes
    assert "did not finish" in notes
    assert "no checkpoint" in notes  # no filters, no confusion matrix
    # what does exist: the configuration, and the layer table built from it
    assert "<section id=\"layers\">" in html and "Conv2d" in html and "total" in html
    assert "<th scope=\"row\">model</th><td>" + CONV in html
    plots = cli_json(capsys, "plot", rd.path)
    assert plots["files"] == {} and set(plots["notes"]) == set(PLOT_FILES)


def test_report_of_a_crashed_run(runs, capsys):
    rd = RunDir(runs["crashed"])
    assert not rd.summary.exists() and len(rd.read_metrics()) == 1
    printed = cli_json(capsys, "report", rd.path)
    html = rd.report.read_text()
    self_contained(html)
    assert "Result: the run stopped before its final test evaluation (see Result)" in printed["notes"]
    assert "<td>stopped: the loss became nan at step" in html  # the status, from train.log
    assert "<pre>" in html and "cnnlab train --resume" in html.split("<pre>")[1]  # the end of train.log
    for name in ("loss", "accuracy", "lr", "filters", "confusion", "mistakes"):  # epoch 1's best weights
        assert f'id="fig-{name}"' in html
    assert "not recorded: the machine is written to summary.json" in html


def test_status_comes_from_the_run_state_not_the_log(runs, tmp_path):
    """train.log is shown, never parsed: without state.json a crashed run did not finish, whatever
    its log says; the reason a report gives is the one the trainer recorded."""
    from cnnlab.workflows.report import read_run

    run = copy_run(runs["crashed"], tmp_path / "crashed")
    rd = RunDir(run)
    assert any(line.startswith("stopped") for line in rd.read_log())
    rd.state.unlink()
    files = read_run(run)
    assert files.short_status == "did not finish" and files.status.startswith("did not finish (no summary.json")
    rd.write_state("stopped", "stopped by SIGTERM at step 7; continue with: cnnlab train --resume X")
    files = read_run(run)
    assert files.short_status == "stopped"
    assert files.status == "stopped by SIGTERM at step 7; continue with: cnnlab train --resume X"


def test_report_of_a_scratch_engine_run(runs, capsys):
    printed = cli_json(capsys, "report", runs["scratch"])
    html = Path(printed["path"]).read_text()
    self_contained(html)
    assert printed["notes"] == []
    assert "engine scratch" in html and "PyTorch twin of the scratch model" in html
    assert 'id="fig-filters"' in html


def test_report_of_a_run_without_conv(runs, capsys):
    printed = cli_json(capsys, "report", runs["mlp"])
    html = Path(printed["path"]).read_text()
    assert printed["notes"] == ["First-layer filters: the model (fc32-relu) has no convolution layer, so there are "
                                "no filters to show"]
    assert 'id="fig-filters"' not in html and 'id="fig-confusion"' in html
    assert '<p class="note">the model (fc32-relu) has no convolution layer' in html


def test_not_a_run_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a cnnlab run directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- comparisons ----------------------------------------------------------------------------

def comparison_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-run="([^"]+)">', html)


def test_comparison_of_runs(runs, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    printed = cli_json(capsys, "report", runs["conv"], runs["mlp"], runs["scratch"], runs["crashed"], "--out", out)
    assert printed["kind"] == "comparison" and printed["runs"] == ["conv", "mlp", "scratch", "crashed"]
    html = out.read_text()
    self_contained(html)
    assert comparison_rows(html) == ["conv", "mlp", "scratch", "crashed"]
    heads = re.findall(r'<th scope="col" data-key="([^"]+)"', html.split('id="comparison"')[1].split("</thead>")[0])
    assert heads == ["run", "status", "model", "engine", "device", "epochs", "best_val_acc", "test_acc", "test_loss",
                     "train_seconds", "seconds_per_epoch", "time_to_accuracy", "latency", "params", "trainable_params",
                     "macs", "score"]
    conv = RunDir(runs["conv"]).read_summary()
    row = html.split('<tr data-run="conv">')[1].split("</tr>")[0]
    assert f'data-value="{100 * conv["test_acc"]!r}"' in row
    crashed = html.split('<tr data-run="crashed">')[1].split("</tr>")[0]
    assert "<td>stopped</td>" in crashed and "<td>did not finish</td>" not in html
    for fig in ("compare_val_acc", "compare_train_loss", "compare_val_loss"):
        assert f'id="fig-{fig}"' in html
    assert "function sortBy" in html and 'class="sortable" id="comparison"' in html


def test_comparison_of_a_folder_of_runs(runs, tmp_path, capsys):
    folder = tmp_path / "runs"
    copy_run(runs["mlp"], folder / "mlp")
    copy_run(runs["conv"], folder / "conv")
    (folder / "notes").mkdir()  # not a run: left out
    printed = cli_json(capsys, "report", folder)
    assert printed["path"] == str(folder / RunDir(folder).report.name) and printed["runs"] == ["conv", "mlp"]
    assert comparison_rows(RunDir(folder).report.read_text()) == ["conv", "mlp"]


def test_comparison_of_a_study(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(f"description: conv vs mlp\nbase: {{dataset: '{DATASET}', epochs: 1, batch_size: 16, threads: 1, "
                     f"device: cpu}}\nexperiments:\n  conv: {{model: {CONV}}}\n  mlp: {{model: fc32-relu}}\nseeds: 2\n")
    out = tmp_path / "study"
    assert main(["study", str(study), "--out", str(out)]) == 0
    printed = cli_json(capsys, "report", out)
    assert printed["path"] == str(RunDir(out).report) and printed["kind"] == "comparison"
    assert printed["runs"] == ["conv/seed0", "conv/seed1", "mlp/seed0", "mlp/seed1"]
    html = RunDir(out).report.read_text()
    self_contained(html)
    assert "cnnlab study report: study" in html and "conv vs mlp" in html
    assert 'id="experiments"' in html and "± " in html
    # Markdown, with its PNGs beside it
    md = tmp_path / "md" / "study.md"
    printed = cli_json(capsys, "report", out, "--format", "md", "--out", md)
    text = md.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["study-compare_val_acc.png", "study-compare_train_loss.png", "study-compare_val_loss.png"]
    assert all((md.parent / link).is_file() for link in links)
    assert "| conv/seed0 |" in text


def test_markdown_report_of_one_run(runs, tmp_path, capsys):
    run = copy_run(runs["conv"], tmp_path / "md")
    printed = cli_json(capsys, "report", run, "--format", "md")
    rd = RunDir(run)
    assert printed["path"] == str(rd.report_md)
    text = rd.report_md.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert [Path(link).name for link in links] == list(PLOT_FILES.values())
    assert all((rd.path / link).resolve() == rd.plot_file(Path(link).stem).resolve() for link in links)
    assert all(rd.plot_file(name).is_file() for name in PLOT_FILES)
    assert "| **test accuracy** |" in text and "## Layers and cost" in text


# ---- TensorBoard ----------------------------------------------------------------------------

def test_tensorboard_logs_scalars_filters_and_graph(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    assert main(["train", "--dataset", DATASET, "--model", CONV, "--epochs", "2", "--batch-size", "16",
                 "--device", "cpu", "--threads", "1", "--tensorboard", "--quiet", "--out", str(out)]) == 0
    rd = RunDir(out)
    assert TrainConfig.load(rd.config).tensorboard is True
    ea = EventAccumulator(str(rd.tensorboard), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    assert {"loss/train_iteration", "lr", "loss/train", "loss/val", "accuracy/train", "accuracy/val",
            "test/accuracy"} <= set(tags["scalars"])
    steps = len(rd.read_iterations())
    assert len(ea.Scalars("loss/train_iteration")) == steps
    val = [e.value for e in ea.Scalars("accuracy/val")]
    assert val == pytest.approx([m["val_acc"] for m in rd.read_metrics()], abs=1e-6)
    assert ea.Scalars("test/accuracy")[0].value == pytest.approx(rd.read_summary()["test_acc"])
    images = ea.Images("filters/first_conv")
    assert len(images) == 2 and images[0].width > 0
    assert tags["graph"] is True


def test_tensorboard_curves_continue_across_a_resume(tmp_path):
    """Killed at step 12 (the last checkpoint at step 10) and resumed: every step is logged once."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cnnlab.train.hooks import Hook
    from cnnlab.train.tensorboard import TensorBoardLogger

    class Die(Hook):  # after the TensorBoard hook has written steps 11 and 12 to disk
        def on_step(self, t, loss, n):
            if t.progress.step == 12:
                for h in t.hooks:
                    if isinstance(h, TensorBoardLogger):
                        h.writer.flush()
                raise KeyboardInterrupt

    out = tmp_path / "tb"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(dataset=DATASET, model=CONV, epochs=2, batch_size=16, seed=1, threads=1, device="cpu",
                          tensorboard=True, save_every_steps=5, out=str(out)), quiet=True, hooks=[Die()])
    train(None, resume=str(out), quiet=True)
    ea = EventAccumulator(str(RunDir(out).tensorboard), size_guidance={"scalars": 0})
    ea.Reload()
    steps = [e.step for e in ea.Scalars("loss/train_iteration")]
    assert steps == list(range(1, len(RunDir(out).read_iterations()) + 1))
    assert [e.step for e in ea.Scalars("accuracy/val")] == [18, 36]


def test_tensorboard_missing_is_one_line(tmp_path, monkeypatch, capsys):
    import cnnlab.train.tensorboard as tb

    monkeypatch.setattr(tb, "installed", lambda: False)
    assert main(["train", "--dataset", DATASET, "--model", CONV, "--epochs", "1", "--tensorboard", "--quiet",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'cnnlab[tensorboard]'" in err
    assert not (tmp_path / "x").exists()  # refused before any data was read or file written


# ---- the Python API -------------------------------------------------------------------------

def test_python_api(runs, tmp_path):
    from matplotlib.figure import Figure

    import cnnlab.api as cl

    run = cl.train(dataset=DATASET, model="c4k3-relu-p2", epochs=1, batch_size=16, threads=1, device="cpu",
                   out=str(tmp_path / "api"))
    assert isinstance(run, cl.Run) and run.summary["epochs_run"] == 1 and len(run.metrics) == 1
    assert run.config.model == "c4k3-relu-p2"
    plots = cl.plot(run, write=False)
    assert all(isinstance(f, Figure) for f in plots.figures.values()) and set(plots.figures) == set(PLOT_FILES)
    assert plots.files == {} and not RunDir(run.path).plots.exists()
    assert cl.evaluate(run, write=False)["count"] == 64
    rep = cl.cost(run)
    assert rep.totals["params"] == run.summary["params"]
    assert cl.cost("lenet5", (1, 28, 28)).totals["params"] == 61706
    cmp = cl.compare([run, runs["mlp"]])
    assert [r["run"] for r in cmp.rows] == ["api", "mlp"] and "val_acc" in cmp.figures
    assert 'data-key' not in cmp._repr_html_() and "<table" in cmp._repr_html_()
    report = cl.report(run)
    assert report.path == RunDir(run.path).report and report.path.exists()
    assert "report.html" in report._repr_html_()
    prof = cl.profile("c4k3-relu-p2-fc10", input=(1, 8, 8), batch_size=4, repeats=1)
    assert isinstance(prof.figure, Figure) and "step" in prof.table()
    assert cl.environment()["cpu_cores"] >= 1
