"""The competition file: one YAML mapping, every field checked before the server starts.

    comp = load_competition("competition.yaml")      # a Competition; any problem is one line
    comp.database_url(None)                          # sqlite:///<storage>/competition.db, or the file's URL
    write_demo("competition-demo")                   # an MNIST demo competition file in that folder

A competition file:

    name: cifar10-2026             # lower-case letters, digits and -: the competition in the database
    title: CIFAR-10 class competition 2026
    dataset: cifar10               # its test split is the hidden test set (labels never served)
    data_dir: null                 # default: cnnlab's data directory ($CNNLAB_DATA_DIR)
    metric: ranking                # ranking (error%/12 + cycles/300000, lower is better) or error
    max_activation: 1MB            # the hard peak-activation rule (cnnlab.cost.score)
    bits: 32                       # word width the cost model charges (8, 16 or 32)
    deadline: 2026-12-15T23:59:00+01:00    # with its time zone
    daily_limit: 5                 # submissions per team per UTC day
    hidden_fraction: 0.5           # share of the test set whose figures stay hidden until the deadline
    hidden_seed: 0                 # which images those are (a seeded draw)
    max_upload: 50MB               # largest model file accepted
    time_limit: 300                # seconds one scoring may run (then it is killed and fails)
    memory_limit: 4GB              # address space of a scoring process
    rate_limit: 30                 # requests per minute per client to the login and submit endpoints
    workers: 1                     # scoring processes the server runs (0: run `cnnlab serve worker`)
    storage: competition-data      # submissions, the server secret and SQLite; relative to this file
    database: null                 # default sqlite:///<storage>/competition.db; or postgresql://...

Only `name`, `dataset` and `deadline` are required. Relative paths are relative to the file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from cnnlab.cost.report import DEFAULT_MAX_ACTIVATION
from cnnlab.database import database_url
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text, load_yaml_mapping
from cnnlab.text import parse_bytes
from cnnlab.workflows.search.space import Where

METRICS = ("ranking", "error")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DATABASE_FILE = "competition.db"


@dataclass(frozen=True)
class Competition:
    name: str
    dataset: str
    deadline: dt.datetime
    path: Path  # the file it was read from
    storage: Path
    title: str = ""
    data_dir: str | None = None
    metric: str = "ranking"
    max_activation: int = DEFAULT_MAX_ACTIVATION
    bits: int = 32
    daily_limit: int = 5
    hidden_fraction: float = 0.5
    hidden_seed: int = 0
    max_upload: int = 50_000_000
    time_limit: float = 300.0
    memory_limit: int = 4_000_000_000
    rate_limit: int = 30
    workers: int = 1
    database: str | None = None
    lease: float = 30.0  # seconds a scoring claim lasts without a heartbeat (then the submission is queued again)

    def database_url(self, override: str | None = None) -> str:
        if override:
            return database_url(override, "--db")
        if self.database:
            return database_url(self.database, f"{self.path}: database")
        return f"sqlite:///{self.storage / DATABASE_FILE}"

    def after_deadline(self, now: dt.datetime | None = None) -> bool:
        return (now or dt.datetime.now(dt.timezone.utc)) >= self.deadline

    @property
    def submissions_dir(self) -> Path:
        return self.storage / "submissions"

    @property
    def secret_file(self) -> Path:
        return self.storage / "secret"


# field -> (check, what it must be); None: the field has its own reader below
_CHECKS = {
    "title": (lambda v: isinstance(v, str), "text"),
    "data_dir": (lambda v: v is None or isinstance(v, str), "a folder or null"),
    "metric": (lambda v: v in METRICS, f"{' or '.join(METRICS)}"),
    "bits": (lambda v: v in (8, 16, 32), "8, 16 or 32"),
    "daily_limit": (lambda v: _int(v) and 1 <= v <= 1000, "a whole number from 1 to 1000"),
    "hidden_fraction": (lambda v: _num(v) and 0 <= v < 1, "a number from 0 (nothing hidden) to below 1"),
    "hidden_seed": (lambda v: _int(v), "a whole number"),
    "time_limit": (lambda v: _num(v) and 1 <= v <= 86400, "seconds, from 1 to 86400"),
    "rate_limit": (lambda v: _int(v) and v >= 1, "requests per minute, at least 1"),
    "workers": (lambda v: _int(v) and 0 <= v <= 64, "a whole number from 0 to 64"),
    "lease": (lambda v: _num(v) and 1 <= v <= 3600, "seconds, from 1 to 3600"),
    "database": (lambda v: v is None or isinstance(v, str), "a database URL or null"),
}
_SIZES = {"max_activation": 1, "max_upload": 1024, "memory_limit": 256 * 2**20}  # smallest accepted


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return (_int(v) or isinstance(v, float)) and v == v and abs(v) != float("inf")


def load_competition(path) -> Competition:
    """The competition file, checked whole (one CnnlabError line naming the file, line and key)."""
    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{path} is a directory: give the competition file (YAML), e.g. competition.yaml")
    d = load_yaml_mapping(path, "competition file")
    at = Where(path)
    keys = {f.name for f in dataclasses.fields(Competition)} - {"path"}
    unknown = sorted(str(k) for k in set(d) - keys)
    if unknown:
        raise CnnlabError(f"{at(unknown[0])}: unknown key (a competition file has {', '.join(sorted(keys))})")
    for key in ("name", "dataset", "deadline"):
        if d.get(key) in (None, ""):
            raise CnnlabError(f"{at(key)}: missing; a competition file needs name, dataset and deadline")
    if not isinstance(d["name"], str) or not NAME.match(d["name"]):
        raise CnnlabError(f"{at('name')}: {d['name']!r} is not a competition name: use lower-case letters, digits "
                          "and -, e.g. cifar10-2026")
    _check_dataset(d["dataset"], at("dataset"))
    values = {"name": d["name"], "dataset": d["dataset"], "deadline": _deadline(d["deadline"], at("deadline")),
              "path": path}
    for key, (ok, what) in _CHECKS.items():
        if key in d:
            if not ok(d[key]):
                raise CnnlabError(f"{at(key)}: {d[key]!r} is not {what}")
            values[key] = d[key]
    for key, least in _SIZES.items():
        if key in d:
            try:
                size = parse_bytes(d[key]) if isinstance(d[key], (str, int)) and not isinstance(d[key], bool) else None
            except CnnlabError:
                size = None
            if size is None or size < least:
                raise CnnlabError(f"{at(key)}: {d[key]!r} is not a size of at least {least:,} bytes (e.g. 1MB, 512KiB)")
            values[key] = size
    if "time_limit" in values:
        values["time_limit"] = float(values["time_limit"])
    if values.get("data_dir"):
        values["data_dir"] = str((path.parent / values["data_dir"]).expanduser())
    storage = d.get("storage", f"{d['name']}-data")
    if not isinstance(storage, str) or not storage:
        raise CnnlabError(f"{at('storage')}: {storage!r} is not a folder")
    values["storage"] = (path.parent / storage).expanduser().resolve()
    comp = Competition(**values)
    comp.database_url()  # a database that is no URL: one line now
    return comp


def _check_dataset(name, where: str):
    from cnnlab.data.registry import check_dataset_name

    try:
        check_dataset_name(name)
    except CnnlabError as e:
        raise CnnlabError(f"{where}: {e}") from None


def _deadline(value, where: str) -> dt.datetime:
    """A time with its zone: YAML gives a datetime for an unquoted timestamp, a string for a quoted one."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            value = None
    if not isinstance(value, dt.datetime):
        raise CnnlabError(f"{where}: give a date and time with its time zone, e.g. 2026-12-15T23:59:00+01:00")
    if value.tzinfo is None:
        raise CnnlabError(f"{where}: {value.isoformat()} has no time zone: write it as e.g. "
                          f"{value.isoformat()}+00:00 (UTC) or with your offset")
    return value.astimezone(dt.timezone.utc)


DEMO = """\
# An MNIST demo competition: `cnnlab serve competition {file}` serves it.
name: mnist-demo
title: MNIST demo competition
dataset: mnist
metric: ranking
deadline: {deadline}
daily_limit: 20
hidden_fraction: 0.5
max_upload: 20MB
time_limit: 120
workers: 1
storage: data
"""


def write_demo(folder, days: int = 30) -> Path:
    """An MNIST demo competition file in `folder` (kept if it is there), its deadline `days` from now."""
    path = Path(folder) / "competition.yaml"
    if not path.exists():
        deadline = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).replace(microsecond=0)
        atomic_write_text(path, DEMO.format(file=path, deadline=deadline.isoformat()))
    return path
