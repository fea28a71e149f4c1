"""Measuring trained models: accuracy on a split, predictions, the competition's score, latency
per device and runtime, and the learning-rate range test.

    from cnnlab.workflows.measure import bench_run, evaluate_run, find_lr, predict_run, score_run

    evaluate_run("runs/x", split="val")       # accuracy, loss, per-class, confusion; written to the run
    score_run("runs/x")                       # score.json: test accuracy + the cost model's figures
    bench_run("runs/x", devices=("cpu",))     # bench.csv/.json: accuracy and latency per runtime
    find_lr("lenet5", "mnist")                # the suggested learning rate, before any run exists

Inside, no module imports another of this package:

    evaluate.py   evaluate_run, predict_run, evaluate_file   a run's (or an exported file's) split
    score.py      score_run                                  the class competition's score of a run
    bench.py      bench_run, latency_per_image               accuracy and latency per device and runtime
    lrfind.py     find_lr, lr_range_test, plot_lr_find       the learning-rate range test
    mistakes.py   evaluate_mistakes, Evaluation              a split kept for looking at: confusion and the
                                                             most confident mistakes (`cnnlab plot`, reports)

They read runs through `cnnlab.dirs` and exported files through `cnnlab.workflows.export`.
"""

from cnnlab.workflows.measure.bench import bench_run, latency_per_image, write_bench
from cnnlab.workflows.measure.evaluate import evaluate_file, evaluate_run, predict_run
from cnnlab.workflows.measure.lrfind import LRFindResult, find_lr, lr_range_test, plot_lr_find, suggest_lr
from cnnlab.workflows.measure.score import score_run

__all__ = ["LRFindResult", "bench_run", "evaluate_file", "evaluate_run", "find_lr", "latency_per_image",
           "lr_range_test", "plot_lr_find", "predict_run", "score_run", "suggest_lr", "write_bench"]
