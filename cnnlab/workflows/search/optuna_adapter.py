"""The search's Optuna study, on Optuna's public API: storage, samplers, pruner, and dead workers' trials.

    rdb = open_storage(search, None)             # RDBStorage: SQLite in the search directory, or --storage URL
    study = open_study(search, rdb, worker=1)    # created or loaded; this worker's sampler seed
    mark_started(study, rdb, trial)              # first thing a trial does: a heartbeat, then the mark
    fail_dead(study, search.stale_after)         # before each trial: fail the trials of killed workers

Storage is an `optuna.storages.RDBStorage` with heartbeats: a worker's running trial records one
every stale_after / 4 seconds. A trial whose heartbeat is older than `stale_after` belonged to a
killed worker: `optuna.storages.fail_stale_trials` fails it and Optuna's retry callback queues
its parameters again. A worker killed after Optuna created a trial but before the trial recorded
a heartbeat leaves a RUNNING trial Optuna cannot see as stale; such a trial has no `started` mark
(mark_started records a heartbeat before the mark), so `fail_dead` fails it with `Study.tell`.
"""

from __future__ import annotations

import datetime
import time

from cnnlab.errors import CnnlabError

STARTED = "started"  # user attribute: the trial's objective began (time.time()), a heartbeat recorded


def load_optuna():
    """The optuna module, quiet, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise CnnlabError("cnnlab search needs Optuna: pip install 'cnnlab[search]' (or pip install optuna)") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and stale-trial retries are marked experimental in Optuna; cnnlab relies on them on purpose
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_url(search, storage: str | None) -> str:
    """The storage URL: SQLite in the search directory by default. A postgresql:// URL uses the
    psycopg (3) driver when psycopg2 is not installed."""
    if not storage:
        return search.dir.sqlite_url()
    for scheme in ("postgresql://", "postgres://"):
        if storage.startswith(scheme):
            try:
                import psycopg2  # noqa: F401
            except ImportError:
                return "postgresql+psycopg://" + storage[len(scheme):]
    return storage


def open_storage(search, storage: str | None = None):
    """The RDBStorage at `storage` (a URL; None: search.db), with heartbeats and retries of stale trials."""
    optuna = load_optuna()
    url = storage_url(search, storage)
    if url.startswith("sqlite:///"):
        search.out.mkdir(parents=True, exist_ok=True)
    try:
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna >= 4.9
        callback = {"heartbeat_stale_trial_callback": retry(max_retry=2)} if retry else \
            {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=2)}
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=max(1, int(search.stale_after / 4)), grace_period=int(search.stale_after),
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}, **callback)
    except Exception as e:  # a bad URL, an unreachable server, a missing driver
        raise CnnlabError(f"cannot open the search storage {url.split('@')[-1]}: {str(e).splitlines()[0]}") from None


def open_study(search, storage=None, worker: int = 0):
    """The Optuna study (created or loaded) on `storage`: a URL, None (search.db) or an RDBStorage
    from open_storage. Each worker's sampler has its own seed (seed + 1000 x worker): with the same
    seed, workers would propose the same candidates."""
    optuna = load_optuna()
    rdb = storage if isinstance(storage, optuna.storages.RDBStorage) else open_storage(search, storage)
    seed = search.seed + 1000 * worker
    if len(search.objectives) > 1 or search.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed)
    elif search.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, max(2, search.trials // 3)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if search.prune else \
        optuna.pruners.NopPruner()
    return optuna.create_study(study_name=search.path.stem, storage=rdb, sampler=sampler, pruner=pruner,
                               directions=search.directions, load_if_exists=True)


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
    """Fail RUNNING trials without a `started` mark for `after` seconds (a worker killed between
    creating a trial and its first heartbeat). They have no parameters yet, so nothing is retried."""
    optuna = load_optuna()
    from optuna.trial import TrialState

    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if STARTED not in t.user_attrs and t.datetime_start and (now - t.datetime_start).total_seconds() > after:
            try:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # another worker failed it first
                pass


def fail_dead(study, after: float):
    """Fail the running trials of killed workers: stale heartbeats (retried with their parameters)
    and trials that never started."""
    load_optuna().storages.fail_stale_trials(study)
    fail_unstarted(study, after)
