"""Running `cnnlab ARGV` inside the test process, and checking a user error's one line.

    code, out, err = cli(capsys, "predict", path, "--out", out)
    line = one_line_error(code, err, "not a safetensors file")
"""

from __future__ import annotations

from cnnlab.cli import main


def cli(capsys, *argv):
    """(exit code, stdout, stderr) of `cnnlab ARGV` run in this process."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    """The one `cnnlab: error:` line of a user error (exit 2, no traceback), holding each of `needles`."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnlab: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
