"""Workflows: what a command does with runs, models and data, as functions a notebook can call.

They sit above the engines, the cost model and the run directory, and below the commands:

    evaluate.py   evaluate_run, predict_run     a run's split: accuracy, confusion, predictions
    score.py      score_run                     the class competition's score of a run
    bench.py      bench_run                     accuracy and latency per device
    study.py      load_study, run_study         several configs x seeds, a table and curves
    lrfind.py     find_lr                       the learning-rate range test
"""
