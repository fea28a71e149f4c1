"""Every figure-reporting command can speak JSON on stdout, for scripts."""

import json

import pytest


def test_study_json(tmp_path, cli):
    study = tmp_path / "s.yaml"
    study.write_text("base:\n  model: c4k3-relu-p2-fc10-relu\n  dataset: 'synthetic:shape=1x8x8,classes=3,train=200,test=30'\n"
                     "  epochs: 1\n  batch_size: 32\nexperiments:\n  sgd: {optimizer: sgd, lr: 0.05}\n"
                     "  adam: {optimizer: adam}\n")
    r = cli("study", study, "--out", tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert set(results) == {"sgd", "adam"} and results["adam"]["runs"] == 1
    summary = json.loads((tmp_path / "out" / "runs" / "sgd" / "seed0" / "summary.json").read_text())
    assert results["sgd"]["test_acc"][0] == pytest.approx(summary["test_acc"]) and summary["test_count"] == 30
    assert "[1/2]" in r.stderr


def test_env_and_data_json(cli):
    env = json.loads(cli("env", "--json").stdout)
    assert env["cpu_cores"] >= 1 and env["torch"]
    info = json.loads(cli("data", "info", "synthetic:train=50,test=10", "--json").stdout)
    assert info["shape"] == [3, 32, 32] and info["train"] + info["val"] == 50
