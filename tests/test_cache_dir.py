"""cnnlab's cache: one root ($CNNLAB_CACHE_DIR, else $XDG_CACHE_HOME/cnnlab, else ~/.cache/cnnlab)
with a folder per kind of cached file (cnnlab.envinfo.user_cache_dir)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import load_dataset
from cnnlab.data.datasets import cache_dir, default_data_dir
from cnnlab.envinfo import user_cache_dir
from cnnlab.weights import cached_path


def test_the_cache_root_is_the_setting_else_xdg_else_home(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNLAB_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir("pretrained") == tmp_path / "home" / ".cache" / "cnnlab" / "pretrained"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir("decoded") == tmp_path / "xdg" / "cnnlab" / "decoded"
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "root"))
    assert user_cache_dir("numba") == tmp_path / "root" / "numba"
    with pytest.raises(ValueError, match="unknown cache kind"):
        user_cache_dir("models")
    assert not (tmp_path / "root").exists()  # naming a folder creates nothing


def test_every_kind_of_cached_file_is_under_the_one_root(monkeypatch, tmp_path):
    root = tmp_path / "root"
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(root))
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    assert default_data_dir() == root / "data"
    assert cache_dir() == root / "decoded"
    assert cached_path("https://host/models/w.pth").parent == root / "pretrained"
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"  # an explicit data directory wins

    images = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (images / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(images / split / c / f"{i}.png")
    load_dataset(f"imagefolder:{images}", val_size=0)
    assert [p.parent for p in (root / "decoded").iterdir() if not p.name.startswith(".")] == [root / "decoded"]
    assert sorted(p.name for p in root.iterdir()) == ["decoded"]
