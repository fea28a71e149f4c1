"""Scoring one submission: ONNX Runtime on the hidden test set, the cost model, the competition's rules.

    scorer = Scorer(comp)                      # loads the test split once (a scoring process keeps it)
    result = scorer.score(path, csv_path)      # figures of the public part, the hidden part and both

The file runs as `cnnlab predict model.onnx` runs it (`load_exported`: ONNX Runtime, the file's
weights checked against their recorded SHA-256, its normalisation and test-time augmentation),
on the competition's test split with its labels matched to the model's classes by name. It is
costed as the network in the file (`cnnlab.cost.onnx_graph.OnnxModule`, at the competition's
word width) and given points by the rules `cnnlab score` uses (`cnnlab.cost.score.rubric`, the
error band decided on exact counts). The public part is what the leaderboard shows before the
deadline; `final` (every test image) after it. `hidden_mask` draws the hidden images from a
seeded generator, so every process and every restart hides the same ones.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

PARTS = ("public", "hidden", "final")


def hidden_mask(images: int, fraction: float, seed: int):
    """A bool tensor, True for the round(images * fraction) images kept hidden until the deadline
    (numpy's seeded PCG64 draw: the same images in every process, after every restart)."""
    import numpy as np
    import torch

    mask = torch.zeros(images, dtype=torch.bool)
    mask[torch.from_numpy(np.random.default_rng(int(seed)).permutation(images)[:round(images * fraction)])] = True
    return mask


class Scorer:
    def __init__(self, comp, threads: int = 1):
        import onnxruntime  # noqa: F401  (imported now, so that a time limit measures scoring alone)
        import torch

        import cnnlab.cost.onnx_graph  # noqa: F401
        import cnnlab.workflows.export  # noqa: F401
        from cnnlab.data import load_dataset
        from cnnlab.serve.submit import DatasetFacts

        torch.set_num_threads(threads)
        self.comp = comp
        self.data = load_dataset(comp.dataset, comp.data_dir, min_classes=1)
        self.facts = DatasetFacts(comp.dataset, tuple(int(v) for v in self.data.test.x.shape[1:]),
                                  tuple(self.data.classes), len(self.data.test))
        self.hidden = hidden_mask(len(self.data.test), comp.hidden_fraction, comp.hidden_seed)

    def score(self, path, csv_file=None) -> dict:
        from cnnlab.cost.onnx_graph import OnnxModule
        from cnnlab.cost.report import analyze
        from cnnlab.cost.score import rubric
        from cnnlab.evaluate import labels_for_model, predict_logits
        from cnnlab.serve.submit import check_fit, read_predictions
        from cnnlab.workflows.export import load_exported

        start = time.perf_counter()
        comp, path = self.comp, Path(path)
        data = path.read_bytes()
        pred = load_exported(path)
        meta = pred.meta
        check_fit(meta, self.facts, "the model")
        split = labels_for_model(self.data.test, self.data.classes, meta["classes"], comp.dataset)
        logits = predict_logits(pred, split, *pred.norm(), device=pred.input_device, tta=int(meta.get("tta") or 0))
        predicted = logits.argmax(1)
        right = predicted == split.y
        rep = analyze(OnnxModule(data), tuple(meta["input"]["shape"]), max_activation=comp.max_activation,
                      bits=comp.bits)
        energy_mj, cycles = rep.totals["energy_pj"] * 1e-9, int(rep.totals["cycles"])
        result = {
            "sha256": hashlib.sha256(data).hexdigest(), "model": meta.get("model"), "runtime": pred.runtime,
            "input": list(meta["input"]["shape"]), "tta": int(meta.get("tta") or 0),
            "cycles": cycles, "energy_mj": energy_mj, "peak_activation_bytes": int(rep.peak_activation),
            "peak_activation_layer": rep.peak_layer, "max_activation_bytes": comp.max_activation,
            "params": int(rep.totals["params"]), "macs": int(rep.totals["macs"]), "bits": comp.bits,
            "architecture": rep.arch.name, "uncounted_ops": sorted({op for op, _ in rep.uncounted}),
        }
        for part, mask in (("public", ~self.hidden), ("hidden", self.hidden), ("final", None)):
            hits = right if mask is None else right[mask]
            images = int(hits.numel())
            if images == 0:
                result[part] = None
                continue
            correct = int(hits.sum())
            error = 100 * (images - correct) / images
            result[part] = {"images": images, "correct": correct, "accuracy": correct / images, "error_percent": error,
                            **rubric(error, energy_mj, cycles, rep.peak_activation, comp.max_activation,
                                     counts=(images - correct, images))}
        if csv_file:
            labels = read_predictions(Path(csv_file).read_bytes(), meta["classes"], len(split))
            same = sum(int(a == b) for a, b in zip(labels, predicted.tolist()))
            result["predictions_csv"] = {"rows": len(labels), "agree": same, "agreement": same / len(labels)}
        result["seconds"] = time.perf_counter() - start
        return result
