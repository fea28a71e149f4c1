"""Downloads, against a real HTTP server on the loopback interface serving official-format files."""

import functools
import hashlib
import http.server
import os
import stat
import threading

import pytest

from cnnlab.data import datasets, load_dataset
from cnnlab.data.sources import IDX_FILES, RemoteFile
from cnnlab.errors import DataError
from tests.test_data import make_mnist_dir


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    make_mnist_dir(served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served / "mnist"))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served / "mnist", f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def _sources(folder, url, corrupt=None):
    md5 = lambda n: hashlib.md5((folder / n).read_bytes()).hexdigest()
    return tuple(RemoteFile(n, url + n, "0" * 32 if n == corrupt else md5(n)) for n in IDX_FILES)


def test_missing_dataset_is_downloaded_and_verified(server, tmp_path, monkeypatch, capsys):
    folder, url = server
    monkeypatch.setitem(datasets.SOURCES, "mnist", _sources(folder, url))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    d = load_dataset("mnist", data_dir, val_size=10)
    assert len(d.test) == 100
    for n in IDX_FILES:
        assert (data_dir / "mnist" / n).read_bytes() == (folder / n).read_bytes()
    assert "differs from the official" not in capsys.readouterr().err


def test_download_with_wrong_checksum_leaves_nothing(server, tmp_path, monkeypatch):
    folder, url = server
    monkeypatch.setitem(datasets.SOURCES, "mnist", _sources(folder, url, corrupt=IDX_FILES[1]))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(DataError, match="not the official"):
        load_dataset("mnist", data_dir)
    assert not (data_dir / "mnist" / IDX_FILES[1]).exists()
    assert not [p for p in (data_dir / "mnist").iterdir() if p.name.startswith(".")]  # no partial files


def test_unreachable_address_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.SOURCES, "mnist", (RemoteFile(IDX_FILES[0], "http://127.0.0.1:9/x.gz", "0" * 32),))
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="could not download .* put the official file at"):
        load_dataset("mnist", tmp_path / "data")


def test_a_failed_download_leaves_no_new_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.SOURCES, "mnist", (RemoteFile(IDX_FILES[0], "http://127.0.0.1:9/x.gz", "0" * 32),))
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="could not download"):
        load_dataset("mnist", tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []  # no empty mnist/
    # the default data directory (under cnnlab's cache) is not left behind either
    monkeypatch.delenv("CNNLAB_DATA_DIR")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="could not download"):
        load_dataset("mnist")
    assert not (tmp_path / "cache").exists()


def test_downloaded_files_honour_the_umask(server, tmp_path, monkeypatch):
    folder, url = server
    monkeypatch.setitem(datasets.SOURCES, "mnist", _sources(folder, url))
    (tmp_path / "data").mkdir()
    old = os.umask(0o002)  # a group sharing the data directory; mkstemp would make the files 0600
    try:
        load_dataset("mnist", tmp_path / "data", val_size=10)
    finally:
        os.umask(old)
    assert {stat.S_IMODE((tmp_path / "data" / "mnist" / n).stat().st_mode) for n in IDX_FILES} == {0o664}
    assert stat.S_IMODE((tmp_path / "data" / "mnist").stat().st_mode) == 0o775
