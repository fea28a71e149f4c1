"""The `cnnlab` command.

Each subcommand lives in its own module under `cnnlab.commands` with a function
`add_parser(subparsers)` that adds its parser and sets `func=run(args) -> int`.
A user error (`CnnlabError`) prints one line, `cnnlab: error: ...`, and exits with code 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from cnnlab import __version__
from cnnlab.commands.common import advise_on_write
from cnnlab.errors import CnnlabError
from cnnlab.io import WriteError

NO_SPACE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "the file size limit is reached"}

# Order here is the order in `cnnlab --help`.
COMMANDS = (
    "train", "recipes", "evaluate", "predict", "models", "data", "env", "gradcheck", "profile", "cost", "score", "bench", "lr-find",
    "study", "search", "plot", "report", "export", "cluster", "serve",
)


class _Parser(argparse.ArgumentParser):
    """Bad flags are one line too, like every other user error, with where to read more."""

    def error(self, message):
        self.exit(2, f"cnnlab: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnnlab",
        description="Design, train, measure and cost small convolutional image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"cnnlab.commands.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    words, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, None)
    try:
        args = parser.parse_args(words)
        if rest is not None and not getattr(args, "takes_command", False):
            parser.error(f"unexpected '-- {' '.join(rest)}'")
    except SystemExit as e:  # --help, --version, or a bad flag (already printed as one line)
        return e.code if isinstance(e.code, int) else 2
    args.argv = argv  # as typed (the --nproc launcher re-runs it)
    args.rest = rest or []  # the command after `--` (cnnlab cluster)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CnnlabError as e:
        if e.exit_code in (2, 3, 130) and os.environ.get("RANK", "0") not in ("", "0"):
            return e.exit_code  # every process of a distributed run sees the same input error, NaN or stop: rank 0 says it
        if getattr(e, "quiet", False):
            return e.exit_code  # a process that lost another under `cnnlab train --nproc`: the launcher says which died
        if isinstance(e, WriteError):
            advise_on_write(e, args)
        # an interruption is not an error: it says where the run stopped and how to go on
        print(f"cnnlab: {e}" if e.exit_code == 130 else f"cnnlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno in NO_SPACE:
            print(f"cnnlab: error: could not write {e.filename or 'an output file'}: {NO_SPACE[e.errno]}; free space "
                  "and run again (files already written are intact; a training run continues with --resume)",
                  file=sys.stderr)
            return 2
        print(f"cnnlab: error: {_os_problem(e, hasattr(args, 'out'))}", file=sys.stderr)
        return 2


def _os_problem(e: OSError, has_out: bool = False) -> str:
    """One line for a file-system error: which file, what went wrong, what to do (where the command
    has --out, that it can write elsewhere)."""
    elsewhere = " (e.g. with --out)" if has_out else ""
    name = e.filename or "a file"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "read-only file system" if e.errno == errno.EROFS else "permission denied"
        return f"could not write {name}: {why}; choose a folder you can write to{elsewhere}"
    if e.errno == errno.EISDIR:
        return f"{name} is a directory: give a file name"
    if e.errno == errno.ENOTDIR:
        return f"could not use {name}: a part of that path is a file, not a folder"
    if e.errno == errno.EEXIST and os.path.isfile(name):  # a folder was to be made where a file is
        return f"could not use {name} as a folder: it is a file; choose another path{elsewhere}"
    if e.errno == errno.ENOENT:
        return f"{name} does not exist"
    return f"could not use {name}: {e.strerror or e}"


if __name__ == "__main__":
    raise SystemExit(main())
