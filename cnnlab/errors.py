"""User-facing errors.

A `CnnlabError` is a problem with the user's input (a missing file, a bad spec, an unknown
model). The CLI prints its message as one line and exits with code 2, without a traceback.
Anything else is a bug in cnnlab and keeps its traceback.
"""


def warn(msg: str):
    """A warning for the user: one stderr line, `cnnlab: warning: ...`; the work goes on."""
    import sys

    print(f"cnnlab: warning: {msg}", file=sys.stderr)


class CnnlabError(Exception):
    """A user error: the message names the problem and, where there is one, the fix."""

    exit_code = 2


class SpecError(CnnlabError):
    """An architecture spec string that cannot be parsed or does not fit its input."""


class DataError(CnnlabError):
    """A dataset that is missing, corrupt or in the wrong format."""
