"""Shared test fixtures.

Real-data tests (marked `realdata`) read datasets from $CNNLAB_DATA_DIR, the same data-directory
option users have. Without it they use the per-user data directory and download what is missing;
if that fails they are skipped with the reason, unless CNNLAB_REQUIRE_DATA=1 (as in CI), where
a missing dataset is a failure. The `postgres` fixture starts a throw-away PostgreSQL server for the
tests of shared databases (cnnlab search and cnnlab serve), under the same rule (CNNLAB_REQUIRE_POSTGRES).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from cnnlab.envinfo import user_cache_dir

ROOT = Path(__file__).resolve().parents[1]


# The user's data directory, found before the tests move cnnlab's cache (data/ is under that cache
# unless CNNLAB_DATA_DIR is set); the default one is made here, as a download would, so that tests
# passing $CNNLAB_DATA_DIR as data_dir can download into it.
_USER_DATA_DIR = os.environ.get("CNNLAB_DATA_DIR")
if not _USER_DATA_DIR:
    _USER_DATA_DIR = str(user_cache_dir("data"))
    Path(_USER_DATA_DIR).mkdir(parents=True, exist_ok=True)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # cnnlab's cache (decoded datasets, downloaded weights) is one folder per test session, never the
    # user's; datasets are still read from, and downloaded into, the user's data directory.
    monkeypatch.setenv("CNNLAB_DATA_DIR", _USER_DATA_DIR)
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def one_thread():
    """One CPU thread for torch during a test: tiny batches gain nothing from intra-op threads,
    and on a busy machine a second thread mostly waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _real(name):
    from cnnlab.data import load_dataset
    from cnnlab.errors import DataError

    try:
        return load_dataset(name, os.environ.get("CNNLAB_DATA_DIR"))
    except DataError as e:
        if os.environ.get("CNNLAB_REQUIRE_DATA") == "1":
            pytest.fail(f"real dataset {name} is required here but could not be loaded: {e}")
        pytest.skip(f"real dataset {name} unavailable ({e}); set CNNLAB_DATA_DIR to a folder holding {name}/")


@pytest.fixture(scope="session")
def data_dir():
    """The data directory real-data tests read (None: the per-user default)."""
    return os.environ.get("CNNLAB_DATA_DIR")


@pytest.fixture
def real_dataset():
    return _real


def run_cli(*args, env=None, timeout=300, cwd=None):
    """Run `python -m cnnlab ARGS` as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


@pytest.fixture
def cli():
    return run_cli


# ---- a real PostgreSQL server (cnnlab search's and cnnlab serve's shared-database tests) ----

def _pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return None


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL server on a free loopback port (Debian's postgresql package, which
    .ci/run installs); yields its URL. Without it the test is skipped with the reason, unless
    CNNLAB_REQUIRE_POSTGRES=1 (as in CI), where that is a failure."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        psycopg = None
    missing = [n for n, v in (("initdb", initdb), ("pg_ctl", pg_ctl), ("psycopg", psycopg)) if not v]
    if missing:
        why = (f"PostgreSQL is not installed here ({', '.join(missing)} missing): apt-get install postgresql and "
               "pip install psycopg (the search and serve extras have it)")
        if os.environ.get("CNNLAB_REQUIRE_POSTGRES") == "1":
            pytest.fail(why)
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="cnnlab-pg-"))
    os.chmod(root, 0o755)
    data = root / "data"
    data.mkdir()
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
        shutil.chown(data, "postgres")
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(as_user + [initdb, "-D", str(data), "-U", "cnnlab", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run(as_user + [pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                              f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql://cnnlab@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    """A real headless Chromium (tests/browser.py), one per test module; no Chromium skips the test,
    or fails it under CNNLAB_REQUIRE_BROWSER=1 (CI)."""
    from tests.browser import Browser, find_chromium

    if find_chromium() is None:
        if os.environ.get("CNNLAB_REQUIRE_BROWSER") == "1":
            pytest.fail("CNNLAB_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium installed (apt-get install chromium); set CNNLAB_REQUIRE_BROWSER=1 to require it")
    with Browser(width=1280, height=900) as b:
        yield b
