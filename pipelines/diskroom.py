"""Whether a full disk is one file's doing: the watcher asks before it quarantines a scan for it.

A full disk (ENOSPC, EDQUOT) is usually the machine's trouble and lasts a while: every scan waiting in the
inbox fails the same way, and quarantining each after a few tries would flood failed/ with scans nothing is
wrong with, each to be dropped back by a clerk. A disk-full try counts against the file only on evidence
that the disk has room for other work: once the try's temp files are gone the temp and kept folders have
room again (:func:`has_room`), or another file was stored since the file's previous disk-full try
(:func:`own_try`). The watcher quarantines a file after watch.RESOURCE_LIMIT such tries in a row; a
disk-full try without that evidence is an outage: the file waits in the inbox and is retried.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

OUTAGE_ROOM = 1 << 30  # free bytes under which (or under a quarter of the file system) the disk is full for all


def has_room(*folders: str | Path) -> bool:
    """Whether the temp folder's file system and each folder's have room by OUTAGE_ROOM (a small file system:
    a quarter of it free); a folder not made yet is judged by the nearest one that exists."""
    for folder in (tempfile.gettempdir(), *folders):
        path = Path(folder).absolute()
        while not path.exists() and path != path.parent:
            path = path.parent
        usage = shutil.disk_usage(path)  # free: what an unprivileged process may still write (f_bavail)
        if usage.free < min(OUTAGE_ROOM, usage.total // 4):
            return False
    return True


def own_try(room: bool, stored_before: int | None, stored_now: int) -> bool:
    """Whether a disk-full try looks like the file's own doing: the disk has room now that the try's temp files
    are gone, or other files were stored (``stored_now`` files so far) since its previous disk-full try
    (``stored_before``, None for its first)."""
    return room or (stored_before is not None and stored_now != stored_before)
