"""Running a study: every experiment x seed trained into the study directory, then its results.

    study = load_study("examples/optimizers.yaml")
    results = run_study(study)                 # experiment -> mean ± std figures (see results.py)
    run_study(study, trainer=my_train)         # any callable (config, resume=None) -> summary

A run whose directory holds summary.json is finished and skipped when the study runs again; a
run killed after its first checkpoint resumes from it; one killed before starts over. Every
--pretrained source a run still to start needs is read and matched before the first run trains.
"""

from __future__ import annotations

import dataclasses
import shutil

from cnnlab.config import TrainConfig
from cnnlab.dirs import RunDir
from cnnlab.errors import CnnlabError
from cnnlab.workflows.study.results import collect, plot_curves, write_table
from cnnlab.workflows.study.schema import Study


def check_sources(study: Study):
    """Every --pretrained source a run still to start needs is there and fits its model, before the
    first run trains (a base still to be trained is named at once, not after the other experiments;
    a run to resume has the weights in its checkpoints)."""
    from cnnlab.train.validate import validate

    for run in study.runs:
        rd = RunDir(run.run_dir)
        if run.config.pretrained and not (rd.finished() or rd.is_run() or rd.last.exists()):
            try:
                validate(dataclasses.replace(run.config), new_run=False, read_source=True)
            except CnnlabError as e:
                raise CnnlabError(f"{study.path}: experiment '{run.experiment}': {e}") from None


def default_trainer(config: TrainConfig | None, resume=None) -> dict:
    from cnnlab.train.loop import train

    return train(config, resume=resume, quiet=True)


def run_study(study: Study, trainer=None, log=print) -> dict:
    """Train every unfinished run, then write the table and the plots. Returns the results."""
    trainer = trainer or default_trainer
    check_sources(study)
    study.dir.write_study_file(study.path.read_text())
    total = len(study.runs)
    for i, run in enumerate(study.runs, 1):
        label = f"[{i}/{total}] {run.experiment} seed {run.seed}"
        rd = RunDir(run.run_dir)
        if rd.finished():
            log(f"{label}: finished earlier, skipped")
            continue
        if rd.is_run() or rd.last.exists():
            log(f"{label}: resuming {run.run_dir}")
            trainer(None, resume=str(run.run_dir))
        else:
            if run.run_dir.exists():  # killed before its first checkpoint: nothing to keep
                shutil.rmtree(run.run_dir)
            run.run_dir.parent.mkdir(parents=True, exist_ok=True)
            log(f"{label}: training into {run.run_dir}")
            trainer(run.config)
    results = collect(study)
    write_table(study, results)
    plot_curves(study, results)
    log(f"results: {', '.join(str(p) for p in study.dir.result_files)}")
    return results
