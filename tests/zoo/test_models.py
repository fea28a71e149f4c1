"""Every registered model builds, runs forward and backward on MNIST- and CIFAR-shaped input,
and the zoo's parameter counts match the papers."""

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.models import create_model, list_models
from cnnlab.models.registry import model_builder
from cnnlab.models.summary import count_macs, count_params, model_summary


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape,classes", [((1, 28, 28), 7), ((3, 32, 32), 10)])
def test_forward_backward(name, shape, classes):
    torch.manual_seed(0)
    model = create_model(name, num_classes=classes, in_channels=shape[0], input_size=shape[1:])
    model.train()
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


DOCS_ZOO = Path(__file__).resolve().parents[2] / "docs" / "zoo.md"


def zoo_table(text: str) -> dict:
    """{model name: (paper cell, params cell)} from the model table under "## Models" in docs/zoo.md."""
    section = text.split("\n## Models", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        counts = [c.strip() for c in cells[2].split(",")]
        assert len(names) == len(counts), f"docs/zoo.md row {cells[0]}: {len(names)} names, {len(counts)} counts"
        rows.update({n: (cells[1], c) for n, c in zip(names, counts)})
    return rows


def first_author_and_year(paper: str) -> tuple[str, str]:
    """('He', '2016') from 'He et al. 2016b, identity mappings'."""
    author = re.match(r"([A-Z][a-z]+)", paper)
    year = re.search(r"\b((?:19|20)\d\d)", paper)
    assert author and year, f"the paper cell '{paper}' names no author and year"
    return author.group(1), year.group(1)


def _registry_name(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def docstring_problems(name: str, doc: str, paper: str, params: int, counts: dict) -> list[str]:
    """What is wrong with a zoo builder's docstring, against the docs table and the built models.

    It must cite the docs' paper (the first author's surname and the year), and any "N.NNM parameters"
    it states must be within DOC_TOLERANCE of the built model's count; a count stated for a named
    model ("so ResNet-20 has 0.27M parameters") is checked against that model."""
    problems = []
    author, year = first_author_and_year(paper)
    if not re.search(rf"\b{author}\b", doc):
        problems.append(f"{name}: the docstring does not cite {author} (docs/zoo.md: {paper})")
    if not re.search(rf"\b{year}\b", doc):
        problems.append(f"{name}: the docstring does not give the year {year} (docs/zoo.md: {paper})")
    for who, millions in re.findall(r"(?:([A-Za-z][\w-]*\d+) has )?(\d+(?:\.\d+)?)M param", doc):
        target = _registry_name(who) if who else name
        if target not in counts:
            problems.append(f"{name}: the docstring states the parameters of '{who}', which is not registered")
            continue
        n = counts[target]
        if abs(n - float(millions) * 1e6) > DOC_TOLERANCE * n:
            problems.append(f"{name}: the docstring says {who or name} has {millions}M parameters, "
                            f"the built model has {n:,}")
    return problems


DOC_TOLERANCE = 0.01  # docstrings may round loosely, as papers do: within 1 %


def rounds_to(n: int, printed: str) -> bool:
    """Whether `n` parameters rounds to the printed figure ('0.27M'), at the precision printed."""
    digits = len(printed.rstrip("M").partition(".")[2])
    return abs(n / 1e6 - float(printed.rstrip("M"))) <= 0.5 * 10 ** -digits + 1e-9


@pytest.fixture(scope="module")
def zoo_counts():
    return {n: count_params(create_model(n, num_classes=10, in_channels=3, input_size=32)) for n in list_models("zoo")}


def test_docs_table_lists_exactly_the_zoo():
    table = zoo_table(DOCS_ZOO.read_text())
    assert set(table) == set(list_models("zoo")), (
        f"missing from docs/zoo.md: {sorted(set(list_models('zoo')) - set(table))}; "
        f"documented but not registered: {sorted(set(table) - set(list_models('zoo')))}")


@pytest.mark.parametrize("name", list_models("zoo"))
def test_zoo_docstring_cites_its_paper_and_true_size(name, zoo_counts):
    """The builder's docstring cites the paper docs/zoo.md names (first author and year), the docs'
    parameter count is the built model's, rounded as printed, and a count in the docstring is
    within 1 % of the model it names."""
    paper, printed = zoo_table(DOCS_ZOO.read_text())[name]
    n = zoo_counts[name]
    assert rounds_to(n, printed), f"{name}: docs/zoo.md says {printed} parameters, the built model has {n:,}"
    doc = " ".join((model_builder(name).__doc__ or "").split())
    assert not docstring_problems(name, doc, paper, n, zoo_counts)


def test_the_docstring_check_can_fail():
    counts = {"resnet20": 269722, "resnet32": 464154}
    good = "He, Zhang, Ren & Sun (CVPR 2016); so ResNet-20 has 0.27M parameters."
    assert docstring_problems("resnet32", good, "He et al. 2016", 464154, counts) == []
    assert len(docstring_problems("resnet32", "A ResNet (2016).", "He et al. 2016", 464154, counts)) == 1
    assert len(docstring_problems("resnet32", "He et al. (2015)", "He et al. 2016", 464154, counts)) == 1
    wrong = docstring_problems("resnet32", "He et al., 2016: 0.27M parameters.", "He et al. 2016", 464154, counts)
    assert len(wrong) == 1 and "464,154" in wrong[0]
    assert docstring_problems("resnet32", "He 2016; ResNet-99 has 1.2M parameters", "He et al. 2016", 1, counts)
    assert rounds_to(14_724_042, "14.72M") and not rounds_to(14_724_042, "14.73M")
    assert rounds_to(269_722, "0.27M") and not rounds_to(269_722, "0.28M")


# Published parameter counts for 10 classes (the papers' tables, or the standard CIFAR code).
PUBLISHED = {
    "resnet20": (0.26e6, 0.28e6),  # He et al. 2016, Table 6: 0.27M
    "resnet32": (0.45e6, 0.47e6),  # 0.46M
    "resnet56": (0.84e6, 0.86e6),  # 0.85M
    "resnet18": (11.16e6, 11.18e6),  # CIFAR layout: 11.17M
    "densenet_bc_100": (0.76e6, 0.80e6),  # Huang et al. 2017, Table 2: 0.8M
    "vgg16_bn": (14.70e6, 14.75e6),
    "mobilenet_v2": (2.2e6, 2.3e6),
    "shufflenet_v2": (1.25e6, 1.28e6),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_papers(name):
    lo, hi = PUBLISHED[name]
    n = count_params(create_model(name, num_classes=10, in_channels=3, input_size=32))
    assert lo <= n <= hi, f"{name}: {n} parameters, expected {lo:.0f}-{hi:.0f}"


def test_width_and_depth_options_change_size():
    small = count_params(create_model("shufflenet_v2", width=0.5))
    assert small < count_params(create_model("shufflenet_v2", width=1.0))
    assert count_params(create_model("densenet_bc_100", depth=40, growth=12)) < 0.3e6
    assert count_params(create_model("mobilenet_v2", width=0.5)) < count_params(create_model("mobilenet_v2"))
    assert count_params(create_model("efficientnet_b0", width=0.5, depth=0.5)) < count_params(create_model("efficientnet_b0"))
    assert count_params(create_model("resnet20", width=2)) > 3 * count_params(create_model("resnet20"))


def test_residual_blocks_are_named_and_marked():
    names = {type(m).__name__ for n in ("resnet20", "resnet50", "mobilenet_v2") for m in create_model(n).modules()}
    assert {"BasicBlock", "Bottleneck", "InvertedResidual"} <= names
    for m in create_model("mobilenet_v2").modules():
        if type(m).__name__ == "InvertedResidual":  # only shape-preserving blocks add their input
            x = torch.randn(1, m.block[0][0].in_channels, 8, 8)
            assert m.residual == (m.eval()(x).shape == x.shape)


def test_macs_match_a_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    expected = 32 * 32 * 8 * 3 * 9 + 32 * 32 * 8 * 9 + 8 * 32 * 32 * 10
    assert count_macs(model, (3, 32, 32)) == expected


def test_macs_agree_with_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("resnet20").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    # torch counts 2 flops per multiply-add; the parameter-free shortcuts add none
    assert count_macs(model, (3, 32, 32)) == counter.get_total_flops() // 2


def _cli(argv):
    from cnnlab.commands import models

    parser = argparse.ArgumentParser()
    models.add_parser(parser.add_subparsers())
    args = parser.parse_args(["models", *argv])
    return args.func(args)


def test_models_command_json(capsys):
    assert _cli(["--json", "--tag", "resnet"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in data["models"]}
    assert "resnet20" in rows and "lenet5" not in rows
    assert rows["resnet20"]["params"] == count_params(create_model("resnet20"))
    assert rows["resnet20"]["macs"] == model_summary("resnet20")["macs"] > 40e6


def test_models_command_table_and_grammar(capsys):
    assert _cli(["--input", "1x28x28", "--tag", "classic"]) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "1x28x28" in out
    assert _cli(["--grammar"]) == 0
    assert "cNkK" in capsys.readouterr().out


def test_models_command_rejects_bad_input_shape():
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match="3x32x32"):
        _cli(["--input", "32x32"])


def test_a_registered_model_may_carry_its_options_as_a_call(tmp_path):
    """`fastnet(widths=[16, 64, 128], depth=1)` builds what create_model("fastnet", widths=..., depth=...)
    builds; it is not taken for a spec; bad syntax and an option given twice are one line each;
    a training run of such a model trains and names its directory after the registered name."""
    from cnnlab.config import TrainConfig
    from cnnlab.errors import CnnlabError
    from cnnlab.models.registry import check_model_options, model_name, split_model_call
    from cnnlab.models.spec import looks_like_spec
    from cnnlab.train.loop import default_run_dir

    text = "fastnet(widths=[16, 64, 128], depth=1)"
    assert split_model_call(text) == ("fastnet", {"widths": [16, 64, 128], "depth": 1})
    assert split_model_call("c8k3-relu-fc4", {"x": 1}) == ("c8k3-relu-fc4", {"x": 1})
    assert not looks_like_spec(text) and model_name(text) == "fastnet"
    torch.manual_seed(0)
    a = create_model(text, num_classes=4)
    torch.manual_seed(0)
    b = create_model("fastnet", num_classes=4, widths=[16, 64, 128], depth=1)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert count_params(a) < count_params(create_model("fastnet", num_classes=4))
    for bad, message in [("fastnet(16, 64)", "keyword=literal pairs"), ("fastnet(widths=[16,)", "keyword=literal"),
                         ("fastnet(widths=os.sep)", "keyword=literal"), ("fastnet(width=2)", "has no option 'width'"),
                         ("fastnot(depth=1)", "unknown model 'fastnot' (did you mean fastnet?)")]:
        with pytest.raises(CnnlabError, match=re.escape(message)):
            check_model_options(bad, {})
    with pytest.raises(CnnlabError, match="model_args sets it too"):
        create_model("fastnet(depth=1)", num_classes=4, depth=2)
    config = TrainConfig.from_dict({"model": text, "dataset": "synthetic:shape=3x8x8,classes=4,train=40,test=8",
                                    "out": None})
    assert default_run_dir(config).name.startswith("fastnet-synthetic-")
