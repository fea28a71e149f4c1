"""Workflows: what a command does with runs, models and data, as functions a notebook can call.

They sit above the engines, the cost model and the run directory, and below the commands:

    evaluate.py   evaluate_run, predict_run     a run's split: accuracy, confusion, predictions
    score.py      score_run                     the class competition's score of a run
    bench.py      bench_run                     accuracy and latency per device and runtime
    export.py     export_run, load_for_runtime  safetensors, ONNX, TorchScript and Keras files, checked
    runtimes.py   load_exported, Predictor      an exported file on PyTorch, TorchScript, ONNX Runtime or Keras
    keras_export.py  to_keras                   a PyTorch model as Keras 3 layers
    study.py      load_study, run_study         several configs x seeds, a table and curves
    lrfind.py     find_lr                       the learning-rate range test
    plots.py      plot_run, compare_figures     a run's figures (PNG in RUN_DIR/plots/, or Figures)
    report.py     report                        one run's HTML/Markdown report, or a comparison
"""
