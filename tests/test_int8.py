"""int8 export, and the fastest runtime that predict and bench choose.

Every format with an int8 form (the registry's `quantize` entry: ONNX through ONNX Runtime, OpenVINO
through NNCF) is quantized from a LeNet-5 trained here on real MNIST, calibrated on its training split
and checked on the whole test split; what it records is compared with what `cnnlab evaluate` measures
on the written file. A refusal is produced for real: the real quantizer given black calibration images,
so every activation range is empty and the model collapses. OpenVINO's absence skips its case unless
CNNLAB_REQUIRE_OPENVINO=1 (tests/test_export.py's rule).
"""

from __future__ import annotations


import pytest

from cnnlab.dirs import RunDir
from cnnlab.workflows.export import auto_runtimes, get_format, int8_formats, read_metadata
from tests.cli import cli, one_line_error
from tests.realruns import mnist_lenet
from tests.test_export import cli_json, skip_without

INT8 = [f.name for f in int8_formats()]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One thread, as every export test (tests/conftest.py)."""


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """LeNet-5 after one epoch on 4,000 MNIST training images (about 92% on the 10,000 test images)."""
    return mnist_lenet(tmp_path_factory, "--subset", "4000", "--lr", "3e-3", "--threads", "1")


@pytest.mark.realdata
@pytest.mark.parametrize("fmt", INT8)
def test_int8_export_is_calibrated_checked_and_recorded(mnist_run, fmt, capsys):
    skip_without(fmt)
    info = cli_json(capsys, "export", mnist_run, "--format", fmt, "--int8")
    path = RunDir(mnist_run).export_file(get_format(fmt).ext, int8=True)
    assert info["path"] == str(path) and path.name == f"model-int8.{get_format(fmt).ext}" and path.exists()
    _, meta = read_metadata(path)
    q = meta["quantization"]
    assert q["dtype"] == "int8" and q["calibration"] == {"split": "train", "images": 300, "seed": 0}
    assert q["tool"].split()[0] == {"onnx": "onnxruntime", "openvino": "nncf"}[fmt]
    chk = q["check"]
    assert chk["split"] == "test" and chk["images"] == 10_000 and chk["max_class_drop_allowed"] == 2.0
    assert chk["max_class_drop_points"] <= 2.0 and set(chk["per_class_drop_points"]) == set(meta["classes"])
    assert max(chk["per_class_drop_points"].values()) == pytest.approx(chk["max_class_drop_points"], abs=1e-4)
    # the recorded figures are what the run and the written file measure
    fp32 = cli_json(capsys, "evaluate", mnist_run)
    int8 = cli_json(capsys, "evaluate", path)
    assert chk["fp32_acc"] == fp32["accuracy"] and chk["int8_acc"] == int8["accuracy"]
    assert fp32["accuracy"] > 0.9 and abs(int8["accuracy"] - fp32["accuracy"]) <= 0.005  # within half a point
    assert chk["agreement"] >= 0.99
    # the weights really are 8-bit
    if fmt == "onnx":
        import onnx

        kinds = {t.data_type for t in onnx.load(str(path)).graph.initializer}
        assert onnx.TensorProto.INT8 in kinds
    else:
        import zipfile

        with zipfile.ZipFile(path) as z:
            assert b'element_type="i8"' in z.read("model.xml")
    # it predicts and benches as an int8 file, on its own runtime, and says so
    runtime = {"onnx": "onnxruntime", "openvino": "openvino"}[fmt]
    pred = cli_json(capsys, "predict", path, "--out", mnist_run / f"{fmt}-int8.csv")
    assert pred["runtime"] == f"{runtime}-int8"
    (row,) = cli_json(capsys, "bench", path, "--devices", "cpu", "--batch-size", "8", "--rounds", "1")
    assert row["runtime"] == f"{runtime}-int8" and row["test_acc"] == int8["accuracy"]


@pytest.mark.realdata
def test_int8_refusal_writes_nothing(mnist_run, monkeypatch, capsys):
    """Black calibration images give every activation an empty range: the real quantizer's model collapses,
    a class loses far more than 2 points, and the export refuses in one line, writing nothing; a larger
    --max-class-drop accepts it."""
    fmt = get_format("onnx")
    real = fmt.quantize
    broken = type(fmt)(**{**fmt.__dict__, "quantize": lambda model, meta, calib, **o: real(model, meta, calib * 0 - 10, **o)})
    monkeypatch.setitem(__import__("cnnlab.workflows.export.formats", fromlist=["FORMATS"]).FORMATS, "onnx", broken)
    out = mnist_run / "refused.onnx"
    code, _, err = cli(capsys, "export", mnist_run, "--format", "onnx", "--int8", "--out", out)
    one_line_error(code, err, "int8 lowers class", "over --max-class-drop 2", "nothing was written",
                   "--max-class-drop")
    assert not out.exists()
    accept = err.split("--max-class-drop ")[-1].strip()
    info = cli_json(capsys, "export", mnist_run, "--format", "onnx", "--int8", "--out", out, "--max-class-drop", accept)
    assert out.exists() and info["quantization"]["check"]["max_class_drop_points"] > 2


@pytest.mark.realdata
def test_int8_bad_input(mnist_run, capsys):
    for argv, words in (
        (["--format", "torchscript", "--int8"], ("--int8 applies to --format onnx",)),
        (["--format", "onnx", "--int8", "--calibration-images", "0"], ("--calibration-images must be at least 1",)),
        (["--format", "onnx", "--int8", "--max-class-drop", "-1"], ("--max-class-drop must be",)),
        (["--format", "onnx", "--int8", "--max-class-drop", "nan"], ("--max-class-drop must be",)),
    ):
        code, _, err = cli(capsys, "export", mnist_run, *argv, "--out", mnist_run / "bad.onnx")
        one_line_error(code, err, *words)
    assert not (mnist_run / "bad.onnx").exists()
    code, _, err = cli(capsys, "predict", mnist_run, "--runtime", "onnxruntime-int8")
    one_line_error(code, err, "--format onnx --int8")


@pytest.mark.realdata
def test_bench_quantizes_a_run_in_memory(mnist_run, capsys):
    """`--runtimes X-int8` on a run quantizes it as `cnnlab export --int8` does (same calibration), so its row
    has the int8 file's accuracy."""
    rows = cli_json(capsys, "bench", mnist_run, "--devices", "cpu", "--runtimes", "torch,onnxruntime-int8",
                    "--batch-size", "8", "--rounds", "1", "--out", mnist_run / "int8-bench.csv")
    assert [r["runtime"] for r in rows] == ["torch", "onnxruntime-int8"]
    assert all(r["status"] == "ok" for r in rows)
    exported = cli_json(capsys, "export", mnist_run, "--format", "onnx", "--int8", "--out", mnist_run / "m.onnx")
    assert rows[1]["test_acc"] == exported["quantization"]["check"]["int8_acc"]


@pytest.mark.realdata
def test_predict_chooses_the_fastest_runtime(mnist_run, capsys):
    from cnnlab.dirs import load_run
    from cnnlab.workflows.export import export_metadata
    from cnnlab.workflows.measure.bench import choose_runtime

    run = load_run(mnist_run)
    meta = export_metadata(run, None)
    test = run.split("test")
    # a job too small to repay converting stays on PyTorch, and says why
    pred, why = choose_runtime(run.model, meta, "cpu", "", test.x[:64], work=100)
    assert pred.runtime == "torch" and "less than trying the other runtimes" in why
    # a large one is probed on every installed runtime; the answer names each with its time
    pred, why = choose_runtime(run.model, meta, "cpu", "", test.x[:64], work=10**9)
    assert pred.runtime in auto_runtimes() and why.startswith("the fastest of a 64-image probe on cpu")
    assert all(rt in why for rt in auto_runtimes())
    # measured by bench on this device and thread count: bench.json decides, and predict says so
    rd = RunDir(mnist_run)
    rows = cli_json(capsys, "bench", mnist_run, "--devices", "cpu", "--batch-size", "16", "--rounds", "1",
                    "--threads", "1")
    assert [r["runtime"] for r in rows] == list(auto_runtimes())
    fastest = min(rows, key=lambda r: r["latency_ms_per_image_batch"])["runtime"]
    info = cli_json(capsys, "predict", mnist_run, "--out", mnist_run / "auto.csv")
    assert info["runtime"] == fastest and info["runtime_choice"].startswith("the fastest in bench.json on cpu")
    # the chosen runtime predicts what PyTorch predicts (converted runtimes agree within 1e-4)
    cli_json(capsys, "predict", mnist_run, "--runtime", "torch", "--out", mnist_run / "torch.csv")
    a, b = (mnist_run / "auto.csv").read_text().splitlines(), (mnist_run / "torch.csv").read_text().splitlines()
    assert len(a) == len(b) == 10_001 and sum(x != y for x, y in zip(a, b)) <= 2
    assert rd.bench_json.exists()
