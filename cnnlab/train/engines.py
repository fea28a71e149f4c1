"""The engine table: the one place that names cnnlab's training engines.

    ENGINES["torch"]    cnnlab.train.torch_engine.TorchEngine   (PyTorch: the model zoo, GPU, tricks)
    ENGINES["scratch"]  cnnlab.scratch.engine.ScratchEngine     (the from-scratch NumPy engine)

An engine class offers `build(config, num_classes, in_shape, steps_per_epoch, device, world)`, the
Engine interface of `cnnlab.train.torch_engine`, `UNSUPPORTED` (config keys it does not do, with
the value they must keep) and `check(config)` (its own options, checked without building a model).
"""

from __future__ import annotations

from cnnlab.errors import CnnlabError
from cnnlab.scratch.engine import ScratchEngine
from cnnlab.train.torch_engine import TorchEngine

ENGINES = {"torch": TorchEngine, "scratch": ScratchEngine}


def engine_class(name: str):
    if name not in ENGINES:
        raise CnnlabError(f"unknown engine '{name}': choose {' or '.join(ENGINES)}")
    return ENGINES[name]


def build_engine(config, num_classes, in_shape, steps_per_epoch, device, world=None):
    return engine_class(config.engine).build(config, num_classes, in_shape, steps_per_epoch, device=device, world=world)
