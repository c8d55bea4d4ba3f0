"""The staging folder a version is built in before ``publish`` renames it into place.

``.tmp-<pid>-<random>`` in the model's folder (the server skips every name that is not a
positive integer). A publisher killed mid-way leaves one behind; the next publish removes those
whose process is gone. The published tree gets the usual modes (0755/0644 under umask 022), as
``mkdtemp`` makes the folder 0700 and a server running as another user could not read it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)
STAGING_PREFIX = ".tmp-"
# Staging folders named without a pid (older Visor, other tools) are left alone this long.
STALE_AFTER_S = 60.0


def make_staging(model_dir: Path) -> Path:
    """A fresh, private staging folder named after this process."""
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=model_dir))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Another user's live process
        return True
    return True


def is_stale(folder: Path, now: float | None = None) -> bool:
    """A staging folder whose publisher is gone (or, without a pid in its name, an old one)."""
    pid_text = folder.name[len(STAGING_PREFIX) :].split("-", 1)[0]
    if pid_text.isdigit():
        return int(pid_text) != os.getpid() and not _pid_alive(int(pid_text))
    try:
        age = (now or time.time()) - folder.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_AFTER_S


def remove_stale(model_dir: Path) -> list[Path]:
    """Delete the stale staging folders of ``model_dir``; the ones removed."""
    removed = []
    for folder in model_dir.glob(f"{STAGING_PREFIX}*"):
        if folder.is_dir() and is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("removed %s, left by an interrupted publish", folder)
            removed.append(folder)
    return removed


def _umask() -> int:
    # The only portable way to read the umask is to set it; this runs once per publish,
    # before any other thread of the trainer creates files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes a plain ``mkdir``/``open`` would have."""
    mask = _umask()
    dir_mode, file_mode = 0o777 & ~mask, 0o666 & ~mask
    folder.chmod(dir_mode)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            Path(root, name).chmod(dir_mode)
        for name in files:
            Path(root, name).chmod(file_mode)
