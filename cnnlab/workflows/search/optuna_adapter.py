"""The search's Optuna study, on Optuna's public API: storage, samplers, pruner, and dead workers' trials.

    rdb = open_storage(search, None)             # RDBStorage: SQLite in the search directory, or --storage URL
    study = open_study(search, rdb, worker=1)    # created or loaded; this worker's sampler seed
    mark_started(study, rdb, trial)              # first thing a trial does: a heartbeat, then the mark
    fail_dead(study, search.stale_after)         # before each trial: fail the trials of killed workers
    make_pruner(search)                          # Hyperband, successive halving or the median rule, over epochs

Storage is an `optuna.storages.RDBStorage` with heartbeats: a worker's running trial records one
every stale_after / 4 seconds. A trial whose heartbeat is older than `stale_after` belonged to a
killed worker: `optuna.storages.fail_stale_trials` fails it and Optuna's retry callback queues
its parameters again, once: only the worker whose write failed the trial queues the retry, and
only one worker takes a queued trial. Optuna makes both a read-check-write of the trial's row,
atomic on PostgreSQL (row locks); on SQLite every transaction here begins IMMEDIATE (it takes
the write lock before it reads), without which two workers resuming a killed 2-worker search both
failed each dead trial (two retries of each) and both took one retry (one trial trained twice).
A worker killed after Optuna created a trial but before the trial recorded a heartbeat leaves a
RUNNING trial Optuna cannot see as stale; such a trial has no `started` mark (mark_started
records a heartbeat before the mark), so `fail_dead` fails it with `Study.tell`.

A failed start writes nothing: open_storage removes the search directory it created for search.db
when the storage cannot be opened.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import time

from cnnlab.database import begin_immediate, database_url
from cnnlab.errors import CnnlabError

STARTED = "started"  # user attribute: the trial's objective began (time.time()), a heartbeat recorded


class _ToldByCnnlab(logging.Filter):
    """Optuna logs a trial that raised with the exception's traceback, then "failed with value
    None."; a cnnlab error (a stop by Ctrl-C or SIGTERM, a full disk, a bad dataset) is told by
    cnnlab's own one line as the command exits, so both records are dropped for it. Any other
    exception (a bug) keeps its traceback."""

    def filter(self, record) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (CnnlabError, KeyboardInterrupt)):
            self.quiet = True
            return False
        if getattr(self, "quiet", False) and record.getMessage().endswith("failed with value None."):
            self.quiet = False
            return False
        return True


def load_optuna():
    """The optuna module, quiet, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise CnnlabError("cnnlab search needs Optuna: pip install 'cnnlab[search]' (or pip install optuna)") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    failures = logging.getLogger("optuna.study._optimize")  # where Optuna logs a failed trial
    if not any(isinstance(f, _ToldByCnnlab) for f in failures.filters):
        failures.addFilter(_ToldByCnnlab())
    # heartbeats and stale-trial retries are marked experimental in Optuna; cnnlab relies on them on purpose
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


STORAGE_HELP = "use sqlite:///PATH/search.db or postgresql://USER@HOST/DB"


def storage_url(search, storage: str | None) -> str:
    """The storage URL: SQLite in the search directory by default, else `storage` as SQLAlchemy
    reads it (`cnnlab.database.database_url`: psycopg 3 when psycopg2 is not installed)."""
    if not storage:
        return search.dir.sqlite_url()
    return database_url(storage, "--storage", STORAGE_HELP)


def open_storage(search, storage: str | None = None):
    """The RDBStorage at `storage` (a URL; None: search.db), with heartbeats and retries of stale
    trials. When it cannot be opened: a one-line error, and the search directory is removed if
    this call created it (for search.db)."""
    optuna = load_optuna()
    url = storage_url(search, storage)
    own = url == search.dir.sqlite_url()  # search.db in the search directory
    created = None  # the first folder of search.out this call creates
    if own:
        created = next((p for p in reversed([search.out, *search.out.parents]) if not p.exists()), None)
        search.out.mkdir(parents=True, exist_ok=True)
    sqlite = url.startswith("sqlite")
    try:
        retry = retry_callback(max_retry=2)
        callback = {"heartbeat_stale_trial_callback" if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
                    else "failed_trial_callback": retry}
        rdb = optuna.storages.RDBStorage(
            url, heartbeat_interval=max(1, int(search.stale_after / 4)), grace_period=int(search.stale_after),
            engine_kwargs={"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else {}, **callback)
    except Exception as e:  # a bad URL, an unreachable server, a missing driver, a file that is no database
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        where = url.split("@")[-1]
        if not storage:
            fix = f"move {search.dir.storage_file} away to start the search afresh"
        else:
            fix = f"check --storage ({STORAGE_HELP})" + ("" if sqlite else " and that its server is reachable")
        raise CnnlabError(f"cannot open the search storage {where}: {str(e).splitlines()[0]}; {fix}") from None
    if sqlite:
        begin_immediate(rdb.engine)
    return rdb


def retry_callback(max_retry: int | None = None):
    """Optuna's retry of a failed trial (RetryHeartbeatStaleTrialCallback, Optuna >= 4.9, else
    RetryFailedTrialCallback): a WAITING trial with its parameters, user and system attributes
    (the pruner's completed rungs) and its reported intermediate values, so a retry that continues
    the failed trial's run is pruned as the run would have been."""
    storages = load_optuna().storages
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return retry(max_retry=max_retry, inherit_intermediate_values=True)


def retry_interrupted(study, number: int):
    """Queue a retry of trial `number`, stopped by a signal (it fails as its process stops): the
    next run of the search takes it first and continues its run (worker.interrupted_run)."""
    retry_callback()(study, trial_of(study, number))


def trial_of(study, number: int):
    """The FrozenTrial of trial `number` (with its system attributes, which a running Trial hides)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def retried_trial(frozen) -> int | None:
    """The trial that `frozen` (a FrozenTrial) retries (the last in its retry history), or None."""
    history = frozen.system_attrs.get("retry_history") or []
    return history[-1] if history else None


def sampler_seed(search, worker: int, previous: int) -> int:
    """The sampler seed of worker `worker` joining a study that holds `previous` trials: a new seed
    for each worker and for each time the search is run again. A resumed search seeded as its first
    run proposed its first run's candidates again, which trained as duplicates of finished trials."""
    import numpy as np

    return int(np.random.SeedSequence([search.seed, worker, previous]).generate_state(1)[0])


def open_study(search, storage=None, worker: int = 0):
    """The Optuna study (created or loaded) on `storage`: a URL, None (search.db) or an RDBStorage
    from open_storage. Each worker's sampler has its own seed (sampler_seed): with the same seed,
    workers would propose the same candidates."""
    optuna = load_optuna()
    rdb = storage if isinstance(storage, optuna.storages.RDBStorage) else open_storage(search, storage)
    try:
        previous = rdb.get_n_trials(rdb.get_study_id_from_name(search.path.stem))
    except KeyError:  # a new study
        previous = 0
    seed = sampler_seed(search, worker, previous)
    if len(search.objectives) > 1 or search.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed)
    elif search.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, max(2, search.trials // 3)))
    study = optuna.create_study(study_name=search.path.stem, storage=rdb, sampler=sampler, pruner=make_pruner(search),
                                directions=search.directions, load_if_exists=True)
    have = study.user_attrs.get("objectives")
    if have is None and [d.name.lower() for d in study.directions] == search.directions:
        study.set_user_attr("objectives", search.objectives)  # the first run, or a study from before this mark
        have = search.objectives
    if have != search.objectives:  # Optuna loads a study as it was created: its trials would fail one by one
        was = ", ".join(have) if have else f"{len(study.directions)} objective(s)"
        raise CnnlabError(f"the search's study '{study.study_name}' optimises {was}, but {search.path} asks for "
                          f"{', '.join(search.objectives)}: give the changed search a new --out (or --storage), or "
                          "put its objective back")
    return study


def make_pruner(search):
    """Optuna's pruner for the search's `prune` (cnnlab.workflows.search.stages): successive halving
    or Hyperband over epochs (rungs from `fidelity`), the median rule, or none."""
    optuna, p = load_optuna(), search.pruning
    if p.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_epochs, max_resource=p.max_epochs,
                                              reduction_factor=p.reduction_factor)
    if p.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_epochs, reduction_factor=p.reduction_factor)
    if p.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def best_value(study, rank: int = 1) -> tuple[float, int] | None:
    """(value, trial number) of the `rank`-th best complete trial of a one-objective study (1: the
    best), or None while fewer have completed."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    if len(done) < rank or len(study.directions) != 1:
        return None
    sign = 1 if study.direction.name == "MINIMIZE" else -1
    t = sorted(done, key=lambda t: (sign * t.values[0], t.number))[rank - 1]
    return t.values[0], t.number


def mark_started(study, rdb, trial):
    """Record the trial's heartbeat, then mark it started: a marked trial always has a heartbeat,
    so Optuna's stale check covers it if this worker dies from here on."""
    study_id = rdb.get_study_id_from_name(study.study_name)
    rdb.record_heartbeat(rdb.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    trial.set_user_attr(STARTED, time.time())


def finished(study) -> int:
    """Trials that count toward the budget: complete or pruned (infeasible ones included)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def running(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def fail_unstarted(study, after: float):
    """Fail RUNNING trials without a `started` mark of their own for `after` seconds (a worker killed
    between taking a trial and its first heartbeat). A new trial has no parameters yet, so nothing is
    retried; a retry (it carries its parameters, and the mark it copied) is queued again, by the one
    worker whose write failed it."""
    optuna = load_optuna()
    from optuna.trial import TrialState

    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.datetime_start and (now - t.datetime_start).total_seconds() > after and \
                t.user_attrs.get(STARTED, 0) < t.datetime_start.timestamp() - 1:  # a retry's copied mark is older
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # another worker failed it first
                continue
            if t.system_attrs.get("retry_history"):
                retry_callback()(study, t)


def fail_dead(study, after: float):
    """Fail the running trials of killed workers: stale heartbeats (retried with their parameters)
    and trials that never started."""
    load_optuna().storages.fail_stale_trials(study)
    fail_unstarted(study, after)
