"""Hardware-aware architecture search on Optuna: `cnnlab search SEARCH.yaml` (docs/search.md).

    search = load_search("examples/search-competition.yaml")   # the file, checked whole
    work(search)                                                # trials until search.trials have finished
    final_stage(search)                                         # with `final`: the top candidates retrained in full
    best = finish(search)                                       # trials.csv, pareto.png, best.yaml, best.json

Inside (each module imports only those above it in this list):

    objectives.py      OBJECTIVES, objective      the registry: figures of a trial -> value, with a direction
    stages.py          Pruning, Final             the file's pruner, fidelity, bound and final-stage keys
    space.py           Search, load_search, spec_text, sample   the search file's schema and its space
    optuna_adapter.py  open_storage, open_study, fail_dead       Optuna on its public API: storage, samplers,
                                                                  pruners (Hyperband, halving, median), the
                                                                  trials of killed workers
    worker.py          work, open_search, PruneReport,          one worker's loop: sample, cost, bound, train;
                       candidate_cost                            open_search: dataset, then storage, study
    final.py           final_stage, final_jobs, run_final       the top candidates retrained in full, resumable
    results.py         finish, pareto_figure                    trials.csv, Pareto front, best.yaml / best.json

Every file of a search directory is named by `cnnlab.dirs.search.SearchDir`. Storage is Optuna's
(SQLite search.db by default, or a server URL): a killed search resumes where it stopped, and
several workers (`--workers N`, or the same command on several machines) share one study.
"""

from cnnlab.workflows.search.final import final_jobs, final_stage, finalists, run_final
from cnnlab.workflows.search.objectives import OBJECTIVES, Objective, objective, objective_values
from cnnlab.workflows.search.optuna_adapter import finished, open_storage, open_study, running, storage_url
from cnnlab.workflows.search.results import error_cycles_front, finish, pareto_figure, plot_pareto
from cnnlab.workflows.search.space import KEYS, SAMPLERS, Search, load_search, spec_text
from cnnlab.workflows.search.stages import PRUNERS, Final, Pruning
from cnnlab.workflows.search.worker import PruneReport, candidate_cost, measure_latency_ms, open_search, work

__all__ = ["KEYS", "OBJECTIVES", "PRUNERS", "SAMPLERS", "Final", "Objective", "PruneReport", "Pruning", "Search",
           "candidate_cost", "error_cycles_front", "final_jobs", "final_stage", "finalists", "finish", "finished",
           "load_search", "measure_latency_ms", "objective", "objective_values", "open_search", "open_storage",
           "open_study", "pareto_figure",
           "plot_pareto", "run_final", "running", "spec_text", "storage_url", "work"]
