"""Folders and files only the server's own user can read: the data directory and the jobs database.

The data directory holds the database (API key hashes, job prompts, webhook URLs with their
tokens) beside the signing secrets, so it is made ``0700`` and the database files ``0600``
whatever the umask. One that already exists with wider permissions is tightened at start; if that
is not allowed (another user owns it), the server says so in its log and carries on.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("fluxserve.storage")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> None:
    """Make ``path`` (and any missing parents) a folder only its owner can enter."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    tighten(path)


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; an existing one is tightened."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE))
    except FileExistsError:
        tighten(path)


def tighten(path: Path) -> None:
    """Take every permission of group and others off ``path``; warn, never fail, if that is refused."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(mode & ~0o077)
    except FileNotFoundError:
        return
    except OSError as error:
        log.warning(
            "could not make %s readable by its owner only (%s); run chmod go-rwx on it as its owner", path, error
        )
