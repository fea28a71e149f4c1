"""Workflows: what a command does with runs, models and data, as functions a notebook can call.

    from cnnlab.workflows.measure import evaluate_run
    from cnnlab.workflows.study import load_study, run_study

    evaluate_run("runs/x")                              # the test split's accuracy, written to the run
    run_study(load_study("examples/optimizers.yaml"))   # experiments x seeds, one table and curves

They sit above the engines, the cost model and the directories (`cnnlab.dirs`), and below the
commands. Each package states its inner plan in its own __init__:

    measure/      evaluate_run, predict_run, score_run, bench_run, find_lr   a trained model measured:
                  accuracy on a split, predictions, the competition's score, latency per runtime, the LR test
    export/       export_run, load_exported, load_for_runtime   a model as one checked file of a registered
                  format (safetensors, ONNX, TorchScript, Keras), and such a file on its runtime
    study/        load_study, run_study             several configs x seeds, a table and curves
    search/       load_search, work, finish         hardware-aware architecture search on Optuna
    report/       report, plot_run                  a run's figures; one run's HTML/Markdown report, or a comparison
    cluster.py    job_script, submit                `cnnlab train` on several nodes of a Slurm or LSF cluster
"""
