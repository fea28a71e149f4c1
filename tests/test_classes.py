"""A trained model meets a dataset by class name, never by position.

A model evaluated or predicted on a dataset whose classes come in another order, or only some of
them, is scored in its own classes (accuracy, per-class table, confusion matrix, predictions.csv);
a dataset with a class the model does not know is refused in one line; a one-class dataset cannot
be trained on; an exported file refuses --checkpoint. Every dataset here is made in tmp_path:
Fashion-MNIST-format IDX files (its class names are not in sorted order) and PNG image folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset
from cnnlab.data.sources import FASHION_CLASSES, IDX_FILES
from cnnlab.dirs import load_run
from cnnlab.train.loop import train
from tests.cli import cli, one_line_error
from tests.test_data import write_idx


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))


def cli_json(capsys, *argv):
    code, out, err = cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out), err


def learnable(k, n, shape, rng, templates):
    """n images of k classes: a class template plus noise, so a tiny model learns them in one epoch."""
    y = rng.integers(0, k, n)
    x = templates[y] * 0.6 + rng.uniform(0, 255, (n, *shape)) * 0.4
    return x.round().astype(np.uint8), y


def make_fashion(root, n_train=400, n_test=120, seed=0):
    """root/fashion-mnist/ in the official IDX format; returns the test images and labels."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (10, 28, 28))
    d = root / "fashion-mnist"
    d.mkdir(parents=True)
    tx, ty = learnable(10, n_train, (28, 28), rng, templates)
    ex, ey = learnable(10, n_test, (28, 28), rng, templates)
    for name, a in zip(IDX_FILES, (tx, ty, ex, ey)):
        write_idx(d / name, a)
    return ex, ey


def fashion_run(tmp_path):
    data_dir = tmp_path / "data"
    ex, ey = make_fashion(data_dir)
    run = tmp_path / "run"
    train(TrainConfig(dataset="fashion-mnist", data_dir=str(data_dir), model="c8k3-relu-p2-fc10", epochs=2,
                      batch_size=20, val_size=40, seed=1, out=str(run), threads=1, device="cpu", optimizer="sgd",
                      lr=0.05), quiet=True)
    return run, ex, ey


def test_a_folder_that_sorts_the_classes_otherwise_is_scored_in_the_model_classes(tmp_path, capsys):
    run, ex, ey = fashion_run(tmp_path)
    assert main(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "m.safetensors")]) == 0
    model = tmp_path / "m.safetensors"
    ref, _ = cli_json(capsys, "evaluate", model, "--device", "cpu")
    assert ref["accuracy"] > 0.5  # well above chance: a label mix-up would show

    # the same test images as an image folder: one folder per class ('/' cannot be in a folder name), so
    # the folders sort as Ankle boot, Bag, Coat, ...; its training images are flat grey, so the folder's
    # own mean/std (0.08, ~0) are far from the model's (~0.5, ~0.2), which must be the ones used
    folder = tmp_path / "folder"
    for c in FASHION_CLASSES:
        (folder / "train" / c.replace("/", "_")).mkdir(parents=True)
        Image.fromarray(np.full_like(ex[0], 20)).save(folder / "train" / c.replace("/", "_") / "0.png")
    for i, (x, y) in enumerate(zip(ex, ey)):
        c = FASHION_CLASSES[y].replace("/", "_")
        (folder / "test" / c).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(folder / "test" / c / f"{i:04d}.png")
    assert sorted(c.replace("/", "_") for c in FASHION_CLASSES) != [c.replace("/", "_") for c in FASHION_CLASSES]
    dataset = f"imagefolder:{folder}"
    assert load_dataset(dataset, val_size=0).std[0] < 0.01 < load_run(run).data["std"][0]

    got, err = cli_json(capsys, "evaluate", model, "--dataset", dataset, "--device", "cpu")
    assert "orders its classes differently from the model" in err
    assert got["classes"] == FASHION_CLASSES
    assert (got["accuracy"], got["correct"], got["count"]) == (ref["accuracy"], ref["correct"], ref["count"])
    assert got["confusion"] == ref["confusion"] and got["per_class_accuracy"] == ref["per_class_accuracy"]
    code, out, _ = cli(capsys, "evaluate", model, "--dataset", dataset, "--device", "cpu")
    trouser = next(line for line in out.splitlines() if line.startswith("Trouser"))
    assert trouser.split()[-1] == str(int((ey == 1).sum()))  # the model's name on its own images' count

    # predictions.csv: the model's class indices, the folder's image order (class folders sorted, then files)
    assert main(["predict", str(model), "--out", str(tmp_path / "ref.csv"), "--device", "cpu"]) == 0
    assert main(["predict", str(model), "--dataset", dataset, "--out", str(tmp_path / "f.csv"), "--device", "cpu"]) == 0
    read = lambda p: [int(line.split(",")[1]) for line in p.read_text().splitlines()[1:]]
    expected = read(tmp_path / "ref.csv")
    order = sorted(range(len(ey)), key=lambda i: (FASHION_CLASSES[ey[i]].replace("/", "_"), i))
    assert read(tmp_path / "f.csv") == [expected[i] for i in order]


def test_a_dataset_with_classes_the_model_does_not_know_is_refused(tmp_path, capsys):
    run, ex, _ = fashion_run(tmp_path)
    model = tmp_path / "m.safetensors"
    assert main(["export", str(run), "--format", "safetensors", "--out", str(model)]) == 0
    folder = tmp_path / "folder"
    for split in ("train", "test"):
        for c in ["Trouser", "Bag"] + [f"kind{i}" for i in range(8)]:
            (folder / split / c).mkdir(parents=True)
            Image.fromarray(ex[0]).save(folder / split / c / "0.png")
    for args in (["evaluate"], ["predict", "--out", tmp_path / "p.csv"]):
        code, _, err = cli(capsys, *args, model, "--dataset", f"imagefolder:{folder}")
        one_line_error(code, err, "not among the model's classes", "kind0", "T-shirt/top", "Trouser")
    assert not (tmp_path / "p.csv").exists()


def make_folder(root, classes, n_train=24, n_test=10, seed=0):
    """root/{train,test}/<class>/<i>.png, 8x8 RGB, learnable."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (len(classes), 8, 8, 3))
    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                x = templates[k] * 0.6 + rng.uniform(0, 255, (8, 8, 3)) * 0.4
                Image.fromarray(x.round().astype(np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_a_run_on_a_folder_with_some_of_its_classes_is_scored_by_name(tmp_path, capsys):
    from cnnlab.workflows.measure.mistakes import evaluate_mistakes

    folder = make_folder(tmp_path / "imgs", ("a", "b", "c"))
    run = tmp_path / "run"
    train(TrainConfig(dataset=f"imagefolder:{folder}", model="c4k3-relu-p2-fc3", epochs=2, batch_size=8, val_size=6,
                      seed=0, out=str(run), threads=1, device="cpu", optimizer="sgd", lr=0.05), quiet=True)
    full, _ = cli_json(capsys, "evaluate", run)
    conf = full["confusion"]

    # class a removed: the folder's classes are [b, c] (labels 0, 1), the model's [a, b, c]
    for split in ("train", "test"):
        shutil.rmtree(folder / split / "a")
    got, err = cli_json(capsys, "evaluate", run)
    assert "holds 2 of the model's 3 classes" in err
    assert got["classes"] == ["a", "b", "c"] and got["count"] == 20
    assert got["confusion"] == [[0, 0, 0], conf[1], conf[2]]
    assert got["correct"] == conf[1][1] + conf[2][2]
    code, out, _ = cli(capsys, "evaluate", run)
    assert code == 0 and out.splitlines()[3].split() == ["a", "-", "0"]  # no images: no accuracy
    loaded = load_run(run)
    assert evaluate_mistakes(loaded, loaded.split("test")).confusion == got["confusion"]  # plots and reports

    # one class left: still evaluated, as it is one of the model's; not trained on
    for split in ("train", "test"):
        shutil.rmtree(folder / split / "b")
    one, _ = cli_json(capsys, "evaluate", run)
    assert one["confusion"] == [[0, 0, 0], [0, 0, 0], conf[2]]
    code, _, err = cli(capsys, "train", "--dataset", f"imagefolder:{folder}", "--model", "c4k3-fc2",
                       "--out", tmp_path / "new", "--quiet")
    one_line_error(code, err, "has only 1 class ('c')", "at least 2 classes")
    assert not (tmp_path / "new").exists()

    # renamed since training: refused, naming both class lists
    for split in ("train", "test"):
        (folder / split / "c").rename(folder / split / "zebra")
    code, _, err = cli(capsys, "evaluate", run)
    one_line_error(code, err, "[zebra] is not among the model's classes", "[a, b, c]")


def test_a_one_class_synthetic_dataset_cannot_be_trained_on(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--dataset", "synthetic:shape=1x8x8,classes=1,train=20,test=5",
                       "--model", "c4k3-fc1", "--out", tmp_path / "r", "--quiet")
    one_line_error(code, err, "at least 2 classes", "classes=2 or more")
    assert not (tmp_path / "r").exists()


def test_an_exported_file_refuses_checkpoint(tmp_path, capsys):
    folder = make_folder(tmp_path / "imgs", ("a", "b"), n_train=8, n_test=2)
    run = tmp_path / "run"
    train(TrainConfig(dataset=f"imagefolder:{folder}", model="c4k3-fc2", epochs=1, batch_size=8, val_size=2,
                      out=str(run), threads=1, device="cpu"), quiet=True)
    model = tmp_path / "m.safetensors"
    assert main(["export", str(run), "--format", "safetensors", "--out", str(model)]) == 0
    for args in (["evaluate"], ["predict", "--out", tmp_path / "p.csv"]):
        code, _, err = cli(capsys, *args, model, "--checkpoint", "last")
        one_line_error(code, err, "--checkpoint applies to a run directory", "one set of weights")
    assert not (tmp_path / "p.csv").exists()
    assert cli(capsys, "evaluate", model)[0] == 0 and cli(capsys, "evaluate", run, "--checkpoint", "last")[0] == 0
