"""Who may read the archive: private folders and files for the stored e-dossiers and their index.

E-dossiers hold citizens' personal data, so nothing under the data folder is for other local users:

* folders this code creates (the data dir, ``objects/`` and every case folder under it, the index
  folder) are 0700, or 0750 with ``[store] group_readable = true`` (a backup or portal account in the
  service's group); a folder that already exists is left as its owner made it, with a warning if other
  users can read it;
* stored objects are read-only, ``0o444 & ~umask`` (the folders above keep others out);
* the SQLite index and its ``-wal``/``-shm`` files are 0600 (0640 when group-readable).

Every mode is also narrowed by the process umask (``UMask=0027`` in the systemd unit).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("digitize.storage")
OBJECT_MODE = 0o444
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def current_umask() -> int:
    """The process umask, read without changing it (os.umask() would, for a moment, in every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def folder_mode(group_readable: bool = False) -> int:
    return (0o750 if group_readable else 0o700) & ~current_umask()


def file_mode(group_readable: bool = False) -> int:
    return (0o640 if group_readable else 0o600) & ~current_umask()


def object_mode() -> int:
    return OBJECT_MODE & ~current_umask()


def private_folder(path: str | os.PathLike, group_readable: bool = False) -> Path:
    """Create ``path`` and its missing parents with the private mode; an existing one is kept as it is."""
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    mode = folder_mode(group_readable)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode)
        except FileExistsError:
            continue  # made meanwhile by another process (with the same rule)
        os.chmod(folder, mode)  # mkdir's mode is narrowed by the umask only: the exact mode, not more
    if not missing:
        _warn_if_open(path)
    return path


def open_private_folder(path: str | os.PathLike, group_readable: bool = False) -> int:
    """Open ``path`` as a folder of this account's, created private if missing (parents too): its descriptor,
    for every later step to work relative to. Safe in a parent others can write (review r2cli N4): the folder
    is opened O_NOFOLLOW (a planted symlink is refused: ELOOP), must belong to this account (else EPERM:
    a folder another account made or swapped in), and a new one gets its mode by fchmod on that descriptor.
    An existing folder keeps its mode, with a warning if others can read it. The folders above are walked
    one by one from ``/`` (or the current folder) relative to the one before, missing ones made there; a
    symlink among them is followed only when no other account can re-point it (review3 r3ops R5: a link
    planted in a shared folder above chose where the dossier's copy went)."""
    path = Path(path)
    mode = folder_mode(group_readable)
    fd = os.open("/" if path.is_absolute() else ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = [p for p in path.parts if p != "/"] or ["."]
        for i, name in enumerate(parts[:-1]):
            parent, fd = fd, _open_step(fd, name, Path(*path.parts[:i + 1 + path.is_absolute()]), mode)
            os.close(parent)
        name = parts[-1]
        created = _make(fd, name, mode)
        try:
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as e:  # Linux says ENOTDIR for a link to a folder, ELOOP for one to anything else
            if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, name):
                raise OSError(errno.ELOOP, "it is a symlink (refused: never written through)", str(path)) from None
            raise
    finally:
        os.close(fd)
    try:
        st = os.fstat(child)
        if st.st_uid != os.geteuid():
            raise PermissionError(errno.EPERM, f"it belongs to another account (uid {st.st_uid})", str(path))
        if created:
            os.fchmod(child, mode)
        else:
            _warn_if_open(path, st)
    except BaseException:
        os.close(child)
        raise
    return child


def _make(fd: int, name: str, mode: int) -> bool:
    try:
        os.mkdir(name, mode, dir_fd=fd)
        return True
    except FileExistsError:
        return False


def _is_link(fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode)
    except OSError:
        return False


def _open_step(fd: int, name: str, shown: Path, mode: int) -> int:
    """The folder NAME in FD, made private if missing: never through a symlink that another account could
    re-point (resident.trusted_path's rule for the link, its target and the folders on the way)."""
    from digitize.resident import trusted_path

    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if _make(fd, name, mode):
        child = os.open(name, flags | os.O_NOFOLLOW, dir_fd=fd)
        try:
            os.fchmod(child, mode)  # the exact mode, not the umask's narrowing of it
        except OSError:
            os.close(child)
            raise
        return child
    if _is_link(fd, name):
        if not trusted_path(shown.absolute()):
            raise OSError(errno.ELOOP, "a symlink another account could re-point (refused: never written "
                                       "through)", str(shown))
    else:
        flags |= os.O_NOFOLLOW
    return os.open(name, flags, dir_fd=fd)


def _warn_if_open(path: Path, st: os.stat_result | None = None) -> None:
    try:
        st = st or os.stat(path)
    except OSError:
        return
    if st.st_mode & stat.S_IRWXO and st.st_uid == os.geteuid():
        log.warning("%s is open to other users (mode %o): chmod 700 it (750 for a group) to keep the archive private",
                    path, stat.S_IMODE(st.st_mode))


def private_file(path: str | os.PathLike, group_readable: bool = False) -> None:
    """Create ``path`` empty with the private file mode if missing (never through a symlink); narrow an
    existing one of ours that is more open, and its SQLite side files too.

    An existing file is never opened: closing any descriptor of a file drops *all* of this process's POSIX
    locks on it, including those of SQLite connections already open here (a second Archive in the same
    process); another process could then delete the WAL under them, and they would read a stale index."""
    mode = file_mode(group_readable)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode))
        except OSError:
            pass  # created meanwhile, or not ours to create: SQLite will say what is wrong
        st = None
    except OSError:
        return
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    for suffix in SQLITE_SIDE_FILES:
        side = f"{os.fspath(path)}{suffix}"
        try:
            st = os.lstat(side)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~mode:
            os.chmod(side, stat.S_IMODE(st.st_mode) & mode)
