"""Fetching official files: a progress bar, an MD5 check, and an atomic write.

A failed download leaves nothing new behind: no partial file, and no folder it created on the way
(e.g. an empty <data-dir>/mnist/). The file gets the mode any new file gets (0666 less the umask).
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
import uuid
from pathlib import Path

from tqdm import tqdm

from cnnlab.errors import DataError
from cnnlab.io import make_dirs, remove_new_dirs


def md5sum(path, chunk=1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(remote, dest: Path, timeout: float = 30.0, verify=None) -> None:
    """Download `remote` to `dest`; `dest` appears only complete and verified: against `remote.md5`
    when it has one, and by `verify(path)` (which raises a DataError) when given."""
    created = make_dirs(dest.parent)
    # os.open with 0666, not mkstemp (0600 whatever the umask): the renamed file keeps the mode
    tmp = str(dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(remote.url, headers={"User-Agent": "cnnlab"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {remote.name}",
                          disable=not sys.stderr.isatty(), leave=False) as bar:
                    while block := resp.read(1 << 16):
                        out.write(block)
                        bar.update(len(block))
        got = md5sum(tmp) if remote.md5 else None
        if remote.md5 and got != remote.md5:
            raise DataError(f"downloaded {remote.name} has MD5 {got}, not the official {remote.md5}: "
                            "the download was damaged; run again")
        if verify is not None:
            verify(tmp)
        os.replace(tmp, dest)
        done = True
    except DataError:
        raise
    except Exception as e:  # network errors of every kind: one line, with the way out
        raise DataError(f"could not download {remote.url} ({type(e).__name__}: {e}): put the official file at "
                        f"{dest} or check the network") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if not done:
            remove_new_dirs(created)  # innermost first; one another process has filled is kept
