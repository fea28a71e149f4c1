"""`cnnlab cost` from the command line."""

import json

from cnnlab.cli import main


def test_cost_table(capsys):
    assert main(["cost", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "MACs             651,720" in out and "FLOPs" in out
    assert "31,104 bytes at features.0" in out and "PASS" in out


def test_cost_json_and_limit(capsys):
    assert main(["cost", "c8k3-relu-p2-fc10", "--input", "1x28x28", "--json", "--max-activation", "10KB"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["input"] == [1, 28, 28] and rep["max_activation_bytes"] == 10_000
    assert rep["activation_ok"] is False and rep["peak_activation_bytes"] == (28 * 28 + 8 * 28 * 28) * 4
    assert rep["totals"]["macs"] == sum(layer["macs"] for layer in rep["layers"])


def test_cost_custom_architecture(tmp_path, capsys):
    arch = tmp_path / "arch.yaml"
    arch.write_text("name: tiny\npe_rows: 4\npe_cols: 4\n")
    assert main(["cost", "lenet5", "--arch", str(arch), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["architecture"] == "tiny" and rep["totals"]["cycles"] > 22354


def test_cost_user_errors(capsys):
    assert main(["cost", "lenet5", "--input", "32x32"]) == 2
    assert "bad input shape" in capsys.readouterr().err
    assert main(["cost", "lenet5", "--max-activation", "big"]) == 2
    assert "bad size" in capsys.readouterr().err
    assert main(["cost", "nosuchmodel"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["cost", "lenet5", "--backend", "timeloop"]) == 2
    assert "timeloop-mapper" in capsys.readouterr().err


def test_cost_input_is_checked_against_the_run_and_the_model(tmp_path, capsys):
    from cnnlab.config import TrainConfig
    from cnnlab.train.loop import train

    run = tmp_path / "gray"
    train(TrainConfig(dataset="synthetic:shape=1x12x12,classes=3,train=60,test=30", model="c4k3-relu-p2-fc3",
                      epochs=1, batch_size=30, val_size=30, device="cpu", threads=1, out=str(run)), quiet=True)

    def one_line(*words):
        err = capsys.readouterr().err
        assert err.startswith("cnnlab: error: ") and len(err.strip().splitlines()) == 1, err
        assert all(w in err for w in words), err

    assert main(["cost", str(run), "--input", "3x12x12"]) == 2  # an RGB shape for a gray model
    one_line(f"run {run} takes 1-channel images (1x12x12", "give --input 1x12x12, or leave --input out")
    assert main(["cost", str(run), "--input", "1x16x16"]) == 2  # its fc layer takes the trained size only
    one_line("does not take 1x16x16 images, it trained on 1x12x12", "give --input 1x12x12")
    assert main(["cost", str(run), "--input", "1x12x12", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input"] == [1, 12, 12]
    for rank in ("28x28", "1x28x28x1", "28"):  # a model by name: CxHxW, nothing else
        assert main(["cost", "lenet5", "--input", rank]) == 2
        one_line(f"bad input shape '{rank}': write it as CxHxW")
