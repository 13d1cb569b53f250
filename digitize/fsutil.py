"""File helpers with the two guarantees the brief insists on: hashes computed once, outputs atomic."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import BinaryIO, Iterator

from . import resident
from .text import recorded

CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 hides outputs on shared folders


def sha256_stream(stream: BinaryIO) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: stream.read(CHUNK), b""):
        h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``target``; on success fsync and rename it over ``target``.

    Same directory, so the rename is atomic on POSIX filesystems (and SMB/NFS shares):
    a reader sees either no file or the whole file, never a partial one.
    On any exception the temp file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp_path = target.parent / _part_name(target.name, suffix)
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE))
            break
        except FileExistsError:
            continue
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
        fsync_path(target.parent, strict=False)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _part_name(name: str, suffix: str = "") -> str:
    """A temp name beside ``name``: short (``name`` may be near NAME_MAX), of the one shape sweep_parts knows
    (PART_NAMES)."""
    # the name in valid UTF-8 (a legacy name's odd bytes as \\xe9): veraPDF's JVM, which checks
    # this file by its path, cannot open a path that is not; no control character (a newline kept
    # the part file from matching PART_NAMES, so a crash's leftover was never swept)
    shown = "".join("_" if unicodedata.category(c)[0] == "C" else c for c in recorded(name))
    return f".{fit_name(shown, 40 + len(os.fsencode(suffix)))}.{secrets.token_hex(6)}{suffix}.part"


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: int | None = None, dir_fd: int | None = None) -> Iterator[BinaryIO]:
    """Yield a new temp file beside ``target``, open for writing; on success fsync it and rename it over
    ``target``, else remove it (``target`` untouched).

    Safe in a folder others can write (review rev17cli L1): the folder is opened once and every step is
    relative to it (a folder swapped meanwhile is not followed); the temp file is created O_EXCL|O_NOFOLLOW
    and written through its descriptor, never re-opened by name; before the rename its name must still be
    that file (else FileAccessError: a temp name swapped for a symlink would rename the link into place).
    ``mode``: the new file's (narrowed by the umask); default what open() gives. ``dir_fd``: ``target``'s
    folder, already open (and kept open): a caller that opened it O_NOFOLLOW once (storage/retrieval.py's
    Folder) is never led elsewhere by a path; ``target``'s folder part then only names it in messages."""
    from .errors import FileAccessError

    target = Path(target)
    given = dir_fd
    if dir_fd is None:
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while True:
            name = _part_name(target.name)
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             FILE_MODE if mode is None else mode, dir_fd=dir_fd)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
                mine, there = os.fstat(out.fileno()), os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
                    raise FileAccessError(f"refusing to write {target}: its temp file was replaced meanwhile "
                                          f"(another account can write {target.parent})")
            os.replace(name, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            fsync_path(dir_fd, strict=False)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
            raise
    finally:
        if given is None:
            os.close(dir_fd)


def atomic_write_bytes(target: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, mode) as out:
        out.write(data)


def atomic_write_text(target: str | os.PathLike, text: str, mode: int | None = None) -> None:
    # a name that is not UTF-8: its bytes as \\xe9 (plain text; JSON is made valid before: text.recorded_values)
    atomic_write_bytes(target, recorded(text).encode("utf-8"), mode)


def fsync_path(path: str | os.PathLike | int, strict: bool = True) -> None:
    """Flush a file or a folder (a path, or an open descriptor, which stays open) to disk: a new or renamed
    entry survives a power cut only once its folder is synced too. ``strict=False`` for a sync that is a
    bonus, not a promise (some shares and file systems refuse to fsync a folder): errors are ignored."""
    try:
        if isinstance(path, int):
            os.fsync(path)
            return
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if strict:
            raise


# digitize-<pid>-<pid namespace>@<host>-<kind>-<random>: which process made it, told apart from
# a same-numbered one of another container that shares /tmp and the host name
WORK_DIR = re.compile(r"^digitize-(\d{1,10})-(\d{1,20})@(.+)-[a-z]+-\w+$")
ORPHAN_AGE = 3600.0  # seconds untouched before a dead process's folder is removed
SWEEP_EVERY = 3600.0  # seconds between sweeps of one long-lived process (watch, batch workers)
_last_sweep: float | None = None


def _owner() -> str:
    """This process as work folders name it: pid, pid namespace and host."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{os.getpid()}-{namespace}@{socket.gethostname()}"


@contextlib.contextmanager
def work_dir(kind: str) -> Iterator[Path]:
    """A private temp folder for one job's intermediate files, removed when done. It is named
    after its process, so a folder left by a process killed outright (the OOM killer, kill -9)
    is removed, once untouched for ORPHAN_AGE, by a later sweep of this machine (each process
    sweeps when it makes its first folder, and hourly after)."""
    sweep_orphans()
    with tempfile.TemporaryDirectory(prefix=f"digitize-{_owner()}-{kind}-") as tmp:
        yield Path(tmp)


def sweep_orphans(folder: str | os.PathLike | None = None, force: bool = False) -> list[Path]:
    """Remove the work folders of dead processes of this host and pid namespace (at most every
    SWEEP_EVERY seconds unless FORCE); the folders removed."""
    global _last_sweep
    now = time.monotonic()
    if not force and _last_sweep is not None and now - _last_sweep < SWEEP_EVERY:
        return []
    _last_sweep = now
    mine = _owner().partition("-")[2]  # namespace@host
    removed = []
    try:
        entries = list(os.scandir(folder or tempfile.gettempdir()))
    except OSError:
        return []
    for entry in entries:
        found = WORK_DIR.match(entry.name)
        if found is None or f"{found[2]}@{found[3]}" != mine or _alive(int(found[1])):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or time.time() - entry.stat().st_mtime < ORPHAN_AGE:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    """Whether PID may be a live process; a number no process can have keeps its folder too."""
    return not 0 < pid < 2**22 or resident.alive(pid)  # 2**22: Linux's pid_max limit


# --- names and folders other people can write -------------------------------------------------------
# A scanner inbox is writable by every clerk: a name there may be a symlink, a folder may be swapped
# for one between two calls. Inside such a folder, open with O_NOFOLLOW, walk folders by descriptor
# and write only into folders that this account owns and nobody else can write.

NAME_MAX = 255  # bytes of one path component (ext4, XFS, Btrfs, SMB/NFS exports of them)
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def fit_name(name: str, reserve: int = 0, limit: int = NAME_MAX) -> str:
    """``name``, shortened if needed so that it plus ``reserve`` more bytes fit in ``limit`` UTF-8 bytes.

    The suffix is kept and a short hash of the whole name replaces the cut, so two long names that
    differ only at the end stay different.
    """
    room = limit - reserve
    if len(os.fsencode(name)) <= room:  # the name's own bytes: one not in UTF-8 (a legacy zip's) too
        return name
    stem, dot, suffix = name.rpartition(".")
    suffix = f".{suffix}" if dot and stem and len(os.fsencode(suffix)) <= 16 else ""
    stem = name[: len(name) - len(suffix)]
    tag = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    budget = room - len(os.fsencode(suffix)) - len(tag)
    if budget < 1:
        raise ValueError(f"no room for a name within {limit} bytes (reserve {reserve})")
    raw = os.fsencode(stem)
    cut = budget
    while cut > 0 and cut < len(raw) and raw[cut] & 0xC0 == 0x80 and budget - cut < 3:
        cut -= 1  # never half a character: the next byte continues the one the cut would split
    return os.fsdecode(raw[:cut]) + tag + suffix


def open_regular(path: str | os.PathLike, root: str | os.PathLike | None = None, dir_fd: int | None = None) -> int:
    """A read-only descriptor of ``path`` if it is a regular file reached without following a symlink.

    With ``root``, every folder from ``root`` down to the file is opened with O_NOFOLLOW too (a
    symlinked sub-folder is refused, not followed); with ``dir_fd``, ``path`` is relative to it.
    O_NONBLOCK: a FIFO planted as a scan must not hang the caller.
    """
    from .errors import NotRegularFileError

    path = Path(path)
    parent_fd = None
    try:
        if root is not None and path.is_relative_to(root):
            parent_fd = walk_dirs(root, path.relative_to(root).parent.parts)
            dir_fd, path = parent_fd, Path(path.name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                raise NotRegularFileError(f"{path.name}: a symbolic link or special file, not a regular file "
                                          "(links are never followed)") from None
            raise
    finally:
        if parent_fd is not None:
            os.close(parent_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotRegularFileError(f"{path.name}: not a regular file (a folder, device or pipe)")
    os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def pinned_path(fd: int, name: str) -> Iterator[Path]:
    """A path called ``name`` that reads the very file open as ``fd``, for readers that want a path.

    It is a link in a private temp folder to ``/proc/<this pid>/fd/<fd>``, which reopens that file,
    not whatever its name in a folder other people write points at now (a link to a FIFO or to a
    root-only file swapped in after the checks); a helper process of ours reaches it too."""
    with work_dir("pin") as tmp:
        link = tmp / fit_name(name)
        os.symlink(f"/proc/{os.getpid()}/fd/{fd}", link)
        yield link


def sha256_regular(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """SHA-256 of a regular file opened as :func:`open_regular` opens it."""
    with os.fdopen(open_regular(path, root), "rb") as f:
        return sha256_stream(f)


def copy_hashed(source: BinaryIO, target: str | os.PathLike) -> str:
    """Copy ``source`` (from where it stands) to a new file ``target``; the SHA-256 of what was copied."""
    h = hashlib.sha256()
    with open(target, "xb") as out:
        for block in iter(lambda: source.read(CHUNK), b""):
            h.update(block)
            out.write(block)
    return h.hexdigest()


def walk_dirs(root: str | os.PathLike | int, parts: tuple[str, ...] | list[str], create: bool = False,
              mode: int = 0o750, check=None, shown: str | None = None) -> int:
    """A descriptor of ``root/parts...``, each part opened with O_NOFOLLOW (made first with ``create``).

    ``root`` is a path the caller trusts or a descriptor (not closed here; ``shown`` names it in
    errors). ``check(fd, shown)`` may refuse a part; the caller closes the returned descriptor.
    """
    fd = os.open(root, _NOFOLLOW_DIR & ~os.O_NOFOLLOW) if not isinstance(root, int) else os.dup(root)
    shown = shown or str(root)
    try:
        for part in parts:
            check_name(part)
            shown = f"{shown}/{part}"
            try:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, mode, dir_fd=fd)
                child = os.open(part, _NOFOLLOW_DIR, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotADirectoryError(e.errno, "a symbolic link or not a folder (links are never followed)",
                                             shown) from None
                raise type(e)(e.errno, e.strerror, shown) from None
            os.close(fd)
            fd = child
            if check is not None:
                check(fd, shown)
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_name(part: str) -> str:
    """``part`` if it is one path component (not empty, ``.``, ``..``, nor holding a slash or NUL), else
    ValueError: a name read from a record or a share never leads out of the folder it is used in."""
    if not isinstance(part, str) or part in ("", ".", "..") or "/" in part or "\0" in part:
        raise ValueError(f"bad name {part!r}")
    return part


def private_dir_check(fd: int, shown: str) -> None:
    """Refuse a folder this account must write into but another account owns or could change.

    Owner: this account or root; nobody else may write (no group/other write bit)."""
    from .errors import FileAccessError

    info = os.fstat(fd)
    if info.st_uid not in (os.geteuid(), 0):
        raise FileAccessError(f"refusing {shown}: owned by uid {info.st_uid}, not by this account "
                              f"(uid {os.geteuid()}); remove it or give it to this account")
    if info.st_mode & 0o022:
        raise FileAccessError(f"refusing {shown}: writable by other accounts (mode {info.st_mode & 0o7777:o}); "
                              "chmod go-w it")


def exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def write_text_at(dir_fd: int, name: str, text: str, replace: bool = True) -> None:
    """Write ``dir_fd/name`` atomically without following a symlink anywhere (temp file O_EXCL).

    ``replace=False``: never over an existing ``name`` (FileExistsError), e.g. a new NAME.error.txt that
    another watcher may be writing for the same free name at the same moment."""
    tmp = f".{secrets.token_hex(6)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(recorded(text).encode("utf-8"))  # a name that is not UTF-8: its bytes as \\xe9
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            _rename_noreplace(dir_fd, tmp, dir_fd, name)
        fsync_path(dir_fd, strict=False)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


# --- moves that never replace -------------------------------------------------------------------------
# rename(2) silently replaces its target: a "free" name checked a moment before may have been taken by
# another watcher (or a clerk) since. Every move here fails with FileExistsError instead, atomically:
# renameat2(RENAME_NOREPLACE) where the kernel and file system have it, else a hard link (which never
# replaces) and an unlink, else an O_EXCL placeholder that only this move may then replace.

RENAME_NOREPLACE = 1  # <linux/fs.h>
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
_NO_LINK = _UNSUPPORTED | {errno.EPERM, errno.EMLINK, errno.EACCES}  # EPERM: protected_hardlinks, FAT, some SMB
_renameat2 = None


def _libc_renameat2():
    """libc's renameat2 (glibc >= 2.28), or False when there is none."""
    global _renameat2
    if _renameat2 is None:
        import ctypes

        try:
            func = ctypes.CDLL(None, use_errno=True).renameat2
            func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            func.restype = ctypes.c_int
            _renameat2 = func
        except (AttributeError, OSError):
            _renameat2 = False
    return _renameat2


def _renameat2_noreplace(src_fd: int, src_name: str, dst_fd: int, dst_name: str) -> bool:
    """True when moved; False when the kernel, libc or file system has no RENAME_NOREPLACE."""
    import ctypes

    func = _libc_renameat2()
    if not func:
        return False
    if func(src_fd, os.fsencode(src_name), dst_fd, os.fsencode(dst_name), RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), dst_name)


def _rename_noreplace(src_fd: int, src_name: str, dst_fd: int, dst_name: str) -> None:
    """Move within one file system, never over an existing ``dst_name`` (FileExistsError; EXDEV as OSError)."""
    if _renameat2_noreplace(src_fd, src_name, dst_fd, dst_name):
        return
    try:
        os.link(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
    else:
        os.unlink(src_name, dir_fd=src_fd)
        return
    # no hard links either (some SMB shares): hold the name with an O_EXCL placeholder, then replace only that
    placeholder = os.open(dst_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=dst_fd)
    os.close(placeholder)
    try:
        os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dst_name, dir_fd=dst_fd)
        raise


def move_at(src_fd: int, src_name: str, dst_fd: int, dst_name: str) -> None:
    """Move between two folder descriptors, never replacing ``dst_name`` (FileExistsError if it exists).

    Across file systems the file is copied (no symlink followed) to a hidden ``.NAME.<random>.part`` in the
    target folder, synced, renamed to ``dst_name`` (still never replacing) and only then unlinked at the
    source: a move killed half-way leaves a hidden part file, never a truncated file under the real name."""
    try:
        _rename_noreplace(src_fd, src_name, dst_fd, dst_name)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    if exists_at(dst_fd, dst_name):  # don't copy for nothing; the rename below checks again
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst_name)
    part = f".{fit_name(dst_name, 30)}.{secrets.token_hex(6)}.part"
    source = os.open(src_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
    try:
        target = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE,
                         dir_fd=dst_fd)
        try:
            with os.fdopen(os.dup(source), "rb") as fin, os.fdopen(target, "wb") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
                fout.flush()
                os.fsync(fout.fileno())
            _rename_noreplace(dst_fd, part, dst_fd, dst_name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part, dir_fd=dst_fd)
    finally:
        os.close(source)
    fsync_path(dst_fd, strict=False)
    os.unlink(src_name, dir_fd=src_fd)


# --- temp files a killed writer left ------------------------------------------------------------------
# move_at's ".NAME.<12 hex>.part", write_text_at's ".<12 hex>.part", atomic_path's ".NAME.<12 hex>[.suffix].part":
# the only names swept, so a clerk's "report.part" or a browser's ".x.download.part" stays (review hard15 L3).
PART_NAMES = re.compile(r"^\.(?:.+\.)?[0-9a-f]{12}(?:\.[A-Za-z0-9]{1,16})?\.part$")
PART_AGE = 3600.0  # seconds untouched before a part file counts as abandoned
PART_RECENT = 30 * 86400.0  # a folder without subfolders unchanged this long holds no part file a sweep missed


def folder_now(dir_fd: int) -> float | None:
    """The time as the folder's file system stamps it: the mtime of a probe file written there and removed.
    On a share the server sets mtimes, and its clock may be an hour or more off ours (an SMB server stamping
    local time); None when nothing can be written there."""
    probe = f".{secrets.token_hex(6)}.part"  # a probe a kill leaves behind is swept like any part file
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        os.write(fd, b"0")  # a write, so servers that stamp on write (not on create) stamp it too
        return os.fstat(fd).st_mtime
    except OSError:
        return None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe, dir_fd=dir_fd)


def sweep_parts(folder: str | os.PathLike | int, max_age: float = PART_AGE, recent: float = PART_RECENT,
                tree: bool = True, names: re.Pattern = PART_NAMES) -> list[str]:
    """Remove the temp files that writers killed mid-write (kill -9, a power cut) left in ``folder``'s tree
    (``tree=False``: in ``folder`` itself only); their paths, relative to it.

    Only our own temp names (PART_NAMES), only regular files owned by this account, walked by descriptor
    without following a symlink (a link is never removed through, nor entered), and only when untouched
    for ``max_age`` by the folder's own clock (:func:`folder_now`, not ours): a live writer, another watcher
    on another machine sharing the folder too, touches its file at every block it writes and renames it
    within moments of the last. Age, not a lock: flock is not reliable across machines on SMB/NFS shares,
    and a writer slower than that still loses nothing (its rename fails, the move is undone and retried).
    A folder unchanged for ``recent`` and without subfolders (``st_nlink`` 2) is not listed: making a part
    file changes its folder, so years of done/ are not read at every start. ``names``: the temp names
    removed (a private folder whose every dot-name is a temp file of ours may pass a wider pattern)."""
    removed: list[str] = []
    try:
        top = folder if isinstance(folder, int) else os.open(folder, _NOFOLLOW_DIR)
    except OSError:
        return removed
    try:
        now = folder_now(top)
        if now is not None:
            _sweep_folder(top, "", now, max_age, recent, removed, tree, names)
    finally:
        if not isinstance(folder, int):
            os.close(top)
    return removed


def _sweep_folder(dir_fd: int, here: str, now: float, max_age: float, recent: float, removed: list[str],
                  tree: bool = True, names: re.Pattern = PART_NAMES) -> None:
    try:
        with os.scandir(dir_fd) as listing:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]
    except OSError:
        return
    for name, is_dir in entries:
        if is_dir:
            if not tree:
                continue
            try:  # one stat to pass a folder by; entered only by descriptor, without following a link
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if now - info.st_mtime > recent and info.st_nlink == 2:
                    continue
                child = os.open(name, _NOFOLLOW_DIR, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                _sweep_folder(child, os.path.join(here, name), now, max_age, recent, removed, tree, names)
            finally:
                os.close(child)
            continue
        if not names.match(name):
            continue
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or now - info.st_mtime < max_age:
                continue
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            continue
        removed.append(os.path.join(here, name))


def owner_name() -> str:
    """This process as work folders name it: ``<pid>-<pid namespace>@<host>``."""
    return _owner()


def pid_alive(pid: int) -> bool:
    """Whether PID (of this host and pid namespace) may still run."""
    return _alive(pid)
