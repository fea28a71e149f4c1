"""The competition's tables (SQLAlchemy 2), on SQLite by default or PostgreSQL by URL.

    db = open_database("sqlite:///data/competition.db")   # migrated to the newest schema (Alembic)
    with db.session() as s, s.begin():
        s.add(Team(competition="mnist-demo", name="alpha", token_hash=h))

Two tables, named competition_* so a PostgreSQL database shared with other tools (an Optuna
study of `cnnlab search`) keeps them apart; one database can hold several competitions (each row
names its competition). The schema is made and changed only by the Alembic revisions in
cnnlab/serve/migrations/versions/, run on every start (`upgrade head`), recorded in the table
competition_alembic_version.

SQLite: one file, WAL journal, and every transaction BEGIN IMMEDIATE (`cnnlab.database`), so a
read-then-write (the daily limit's count and the insert, a worker claiming a queued submission)
holds the write lock throughout; a busy database is waited on for 30 s. PostgreSQL: those
transactions lock the rows they read (`FOR UPDATE`; a claim skips rows another worker holds).
Times are stored in UTC and always read back as aware datetimes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import (JSON, DateTime, ForeignKey, Index, Integer, String, Text, TypeDecorator, UniqueConstraint,
                        create_engine, event)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from cnnlab.database import begin_immediate
from cnnlab.errors import CnnlabError
from cnnlab.io import make_dirs, remove_new_dirs

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "competition_alembic_version"
STATUSES = ("queued", "running", "scored", "failed")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTC(TypeDecorator):
    """An aware UTC datetime, whatever the database keeps (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else value.astimezone(dt.timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Team(Base):
    """A team (or the instructor, role 'instructor'): one token, kept only as its keyed hash."""

    __tablename__ = "competition_teams"
    __table_args__ = (UniqueConstraint("competition", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    competition: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16), default="team")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTC, default=utcnow)


class Submission(Base):
    """One uploaded model: queued -> running -> scored or failed (with the reason). The file is
    SUBMISSIONS/<sha256[:2]>/<sha256>.onnx; `result` holds every figure of the scoring."""

    __tablename__ = "competition_submissions"
    __table_args__ = (Index("ix_competition_submissions_queue", "competition", "status", "id"),
                      Index("ix_competition_submissions_team", "team_id", "created_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    competition: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[int] = mapped_column(ForeignKey("competition_teams.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTC, default=utcnow)
    file_name: Mapped[str] = mapped_column(String(128))  # as uploaded, for display only
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    csv_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTC, nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTC, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTC, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class Database:
    def __init__(self, url: str):
        self.url = url
        self.sqlite = url.startswith("sqlite")
        kwargs = {"connect_args": {"timeout": 30, "check_same_thread": False}} if self.sqlite else \
            {"pool_pre_ping": True}
        self.engine = create_engine(url, **kwargs)
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            begin_immediate(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self):
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, record):
    dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN (IMMEDIATE), not the driver's
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_database(url: str) -> Database:
    """The database at `url`, migrated to the newest schema; any failure is one CnnlabError line."""
    from alembic import command
    from alembic.config import Config

    made = make_dirs(Path(url[len("sqlite:///"):]).parent) if url.startswith("sqlite:///") else []
    try:
        db = Database(url)
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with db.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    except CnnlabError:
        remove_new_dirs(made)
        raise
    except Exception as e:  # a bad URL, an unreachable server, a missing driver, a file that is no database
        remove_new_dirs(made)
        where = url.split("@")[-1]
        raise CnnlabError(f"cannot open the competition database {where}: {str(e).strip().splitlines()[0][:160]}; "
                          "check --db (sqlite:///PATH or postgresql://USER@HOST/DB) and that its server is "
                          "reachable") from None
    return db
