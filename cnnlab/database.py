"""Database URLs and SQLite transactions, shared by `cnnlab search` and `cnnlab serve`.

    url = database_url("postgresql://me@dbhost/cnnlab", "--db")   # postgresql+psycopg://... without psycopg2
    engine = sqlalchemy.create_engine(url)
    begin_immediate(engine)        # SQLite: every transaction takes the write lock before it reads

A user writes a database as a URL: sqlite:///PATH or postgresql://USER@HOST/DB. SQLAlchemy reads
postgresql:// with psycopg2, which cnnlab's extras do not install; psycopg (3) is used when psycopg2
is absent. Text that is no URL is one CnnlabError line naming the option it came from.
"""

from __future__ import annotations

from cnnlab.errors import CnnlabError

URL_HELP = "use sqlite:///PATH or postgresql://USER@HOST/DB"


def database_url(text: str, option: str = "--db", help: str = URL_HELP) -> str:
    """The SQLAlchemy URL of a database URL a user gave through `option` (`help` says what to write)."""
    scheme, sep, rest = str(text).partition("://")
    if not sep or not scheme or not rest:
        raise CnnlabError(f"{option} {text!r} is not a database URL: {help}")
    for prefix in ("postgresql://", "postgres://"):
        if text.startswith(prefix):
            try:
                import psycopg2  # noqa: F401
            except ImportError:
                return "postgresql+psycopg://" + text[len(prefix):]
    return text


def begin_immediate(engine):
    """Every transaction on this SQLite engine begins IMMEDIATE (SQLAlchemy's recipe for pysqlite:
    the driver's own transaction handling off, BEGIN emitted on SQLAlchemy's begin), so a
    transaction that reads a row and then writes it holds the write lock throughout."""
    from sqlalchemy import event

    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
