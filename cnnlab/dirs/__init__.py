"""The directories cnnlab writes, one module per kind, every file name spelled in its kind's module.

    run.py     RunDir, load_run     a training run (`cnnlab train`): config, logs, checkpoints, results
    study.py   StudyDir             a study (`cnnlab study`): its runs, the results table and curves
    search.py  SearchDir            a search (`cnnlab search`): its storage, trials and the chosen model

A module outside this package never spells one of their file names; it asks the directory object
for the path or the content. Each kind says whether a directory is of that kind and what state it
is in from its structured files (JSON, CSV, the checkpoint), never from log text.
"""

from cnnlab.dirs.run import ITERATIONS_HEADER, METRICS_HEADER, PLOT_FILES, SPLITS, LoadedRun, RunDir, load_run
from cnnlab.dirs.search import SearchDir
from cnnlab.dirs.study import StudyDir

__all__ = ["ITERATIONS_HEADER", "METRICS_HEADER", "PLOT_FILES", "SPLITS", "LoadedRun", "RunDir",
           "load_run", "SearchDir", "StudyDir"]
