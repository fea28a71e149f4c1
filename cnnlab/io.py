"""Atomic file writes: a file is either its old self or complete, never half-written.

The temporary file is made with mode 0600 (mkstemp); before the rename it gets the mode any new
file would get (0666 less the umask), so a grader in the same group can read the results.

A write that fails (a full disk, a read-only folder, a file where a folder should be) raises a
`WriteError`: one line naming the file the user asked for (never the temporary one) and the cause,
with advice a command may extend (`cnnlab.cli` adds `--out` where the command has it); folders it
made for the file are removed again, so a failed write leaves nothing behind.

Every YAML a user gives cnnlab (config, recipe, study, search and architecture files, `--set` values)
is read by `load_yaml` / `compose_yaml`, with YAML 1.2's numbers: `1e-3` and `5E-4` are floats.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile
from pathlib import Path

from cnnlab.errors import CnnlabError


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


NO_SPACE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "the file size limit is reached"}
NOT_ALLOWED = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EROFS: "read-only file system"}


class WriteError(CnnlabError, OSError):
    """A file or folder cnnlab could not write: `path` (what the user asked for), the cause in words,
    and `advice`. Still an OSError (errno, filename) for callers that handle those."""

    def __init__(self, path, error: OSError, blocker=None, what: str = "write"):
        OSError.__init__(self, error.errno, error.strerror, str(path))
        self.path, self.blocker, self.what = Path(path), blocker, what
        if blocker is not None:
            self.cause, self.advice = f"{blocker} is a file, not a folder", "move it aside or choose another path"
        elif error.errno in NO_SPACE:
            self.cause, self.advice = NO_SPACE[error.errno], "free space and run again (files already written are intact)"
        elif error.errno in NOT_ALLOWED:
            self.cause, self.advice = NOT_ALLOWED[error.errno], "choose a folder you can write to"
        else:
            self.cause, self.advice = (error.strerror or str(error)).lower(), None

    def __reduce__(self):  # the constructor's arguments, for a process that sends it on
        return type(self), (self.path, OSError(self.errno, self.strerror), self.blocker, self.what)

    def __str__(self):
        if self.errno == errno.EISDIR and self.blocker is None:
            return f"{self.path} is a directory: give a file name"
        return f"could not {self.what} {self.path}: {self.cause}" + (f"; {self.advice}" if self.advice else "")


def _file_in_the_way(path: Path):
    """The first part of `path`'s folders that is a file (so no folder can be made under it), or None."""
    for part in reversed(path.parents):
        if part.exists() and not part.is_dir():
            return part
    return None


def make_dirs(path, what: str = "create the folder") -> list[Path]:
    """mkdir -p `path`; the folders it made, deepest first. A failure is a WriteError naming `path`
    (and the file in the way, where a part of it is a file)."""
    path = Path(path)
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_new_dirs(made)
        blocker = _file_in_the_way(path / "x")
        raise WriteError(path, e, blocker, what) from None
    return made


def remove_new_dirs(made):
    """Remove the folders `make_dirs` made (deepest first), as long as they are empty."""
    for d in made:
        try:
            d.rmdir()
        except OSError:  # gone already, or another process put something there: it stays
            break


def atomic_write(path, write_fn, mode="w"):
    """Call write_fn(file) on a temporary file beside `path`, then rename it into place. A failure is
    a WriteError naming `path`; the temporary file and any folder made for it are removed."""
    path = Path(path)
    tmp, made = None, []
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        made = make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except WriteError as e:  # the folder could not be made: name the file asked for
        raise WriteError(path, e, e.blocker) from None
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        remove_new_dirs(made)
        raise WriteError(path, e, _file_in_the_way(path)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path, text: str):
    atomic_write(path, lambda f: f.write(text))


# YAML 1.2's float syntax: PyYAML follows YAML 1.1, which reads 1e-3, 5E-4 and 1.5e3 (no dot, or no
# exponent sign) as strings; every ML config writes learning rates and weight decays that way.
_YAML12_FLOAT = r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"


@functools.cache
def _yaml_loader():
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that also reads YAML 1.2 floats (1e-3, 5E-4) as floats."""

    # appended after YAML 1.1's own int and float rules, so 10 stays an int and 0.5 a float
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_YAML12_FLOAT), list("-+.0123456789"))
    return Loader


def load_yaml(stream):
    """The value of a YAML document (a string or a file), numbers as YAML 1.2 reads them (1e-3 is a
    float). Every YAML that cnnlab reads from a user (config, recipe, study, search, architecture
    files, --set values) is read here."""
    import yaml

    return yaml.load(stream, Loader=_yaml_loader())


def compose_yaml(text: str):
    """The node tree of a YAML document (with line numbers), its scalars resolved as `load_yaml` does."""
    import yaml

    return yaml.compose(text, Loader=_yaml_loader())


def yaml_node_value(node):
    """The Python value of a node from `compose_yaml`."""
    loader = _yaml_loader()("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml_mapping(path, what: str) -> dict:
    """A YAML file that must hold a mapping; every problem becomes one CnnlabError line."""
    import yaml

    try:
        with open(path) as f:
            d = load_yaml(f) or {}
    except FileNotFoundError:
        raise CnnlabError(f"{what} {path} not found") from None
    except UnicodeDecodeError:
        raise CnnlabError(f"{what} {path} is not valid YAML: it is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise CnnlabError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise CnnlabError(f"{what} {path} must hold a mapping of keys to values")
    return d


def check_keys(cls, d: dict, where: str):
    """An unknown key of `d` for the dataclass `cls` is one CnnlabError line listing the valid keys."""
    import dataclasses
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
