"""Studies: several training configurations, several seeds, one table and one set of curves.

    from cnnlab.workflows.study import load_study, run_study

    study = load_study("examples/optimizers.yaml", seeds=3)   # checked whole, before anything runs
    results = run_study(study)                                # experiment -> mean ± std over seeds

Inside, each module depends only on those above it:

    schema.py    load_study, Study, StudyRun      the study file: parsed, every key and merged config checked
    results.py   collect, write_table, plot_curves, mean_std   the table and curves from the run directories
    runner.py    run_study, default_trainer       experiments x seeds trained (finished skipped, killed resumed)

The study directory's files (runs/<experiment>/seed<k>/, the study file's copy, results.md,
results.csv, train_loss.png, val_acc.png) are named by `cnnlab.dirs.StudyDir`. The file format
and the outputs are described in docs/studies.md.
"""

from cnnlab.workflows.study.results import collect, mean_std, plot_curves, write_table
from cnnlab.workflows.study.runner import check_sources, default_trainer, run_study
from cnnlab.workflows.study.schema import STUDY_KEYS, Study, StudyRun, check_config, load_study

__all__ = ["STUDY_KEYS", "Study", "StudyRun", "check_config", "check_sources", "collect", "default_trainer",
           "load_study", "mean_std", "plot_curves", "run_study", "write_table"]
