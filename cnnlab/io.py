"""Atomic file writes: a file is either its old self or complete, never half-written.

The temporary file is made with mode 0600 (mkstemp); before the rename it gets the mode any new
file would get (0666 less the umask), so a grader in the same group can read the results.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


def atomic_write(path, write_fn, mode="w"):
    """Call write_fn(file) on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    tmp = None
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        # name the file the user knows, not the temporary one or its folder
        if e.filename is None or e.filename == tmp or str(e.filename).startswith(str(path.parent / f".{path.name}.")):
            e.filename = str(path)
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path, text: str):
    atomic_write(path, lambda f: f.write(text))


def load_yaml_mapping(path, what: str) -> dict:
    """A YAML file that must hold a mapping; every problem becomes one CnnlabError line."""
    import yaml

    from cnnlab.errors import CnnlabError

    try:
        with open(path) as f:
            d = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise CnnlabError(f"{what} {path} not found") from None
    except yaml.YAMLError as e:
        raise CnnlabError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise CnnlabError(f"{what} {path} must hold a mapping of keys to values")
    return d


def check_keys(cls, d: dict, where: str):
    """An unknown key of `d` for the dataclass `cls` is one CnnlabError line listing the valid keys."""
    import dataclasses

    from cnnlab.errors import CnnlabError

    import difflib

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(names), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise CnnlabError(f"unknown key '{unknown[0]}'{hint} in {where}: valid keys are {', '.join(sorted(names))}")


def dataclass_from_dict(cls, d: dict, where: str, **init):
    """cls(**d, **init) (`init`: further constructor arguments, not keys of `d`), with an unknown
    key reported as one CnnlabError line listing the valid keys."""
    check_keys(cls, d, where)
    return cls(**d, **init)


def write_csv(path, header, rows):
    import csv

    def w(f):
        out = csv.writer(f, lineterminator="\n")
        out.writerow(header)
        out.writerows(rows)

    atomic_write(path, w)
