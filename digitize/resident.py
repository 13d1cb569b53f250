"""Resident servers: one process per user and machine that every run reaches over a unix socket.

Two kinds share this machinery, like the Gradle daemon: the veraPDF validator (a JVM whose start
costs more than checking a one-page scan, see verapdf.py) and the converter (a Python that has
paid its imports and Tesseract's model loading once, see zygote.py). For both:

- the socket lives in a private (0700) folder of its user, reached only through trusted folders
  (each owned by root or the user, writable by no one else) and opened once per process: every
  later use goes through that descriptor (``/proc/self/fd/N/<name>``), never the path again, and
  lock, log and claim files are opened with ``O_NOFOLLOW``. A client talks to a server only if the
  kernel says (``SO_PEERCRED``) that it runs as the same user, before it sends anything;
- it is named after a stamp of what the server would run, so an upgrade or a changed setting gets
  a fresh server and the old one idles out;
- a lock file beside it is held by the server for its whole life and holds its pid: "serving or
  starting" is one atomic question, and a socket file found without the lock is stale;
- the first run that finds none launches one detached (own session, no inherited stdio, cwd /),
  so no shell, terminal or CI runner waits on it; its output goes to a log beside the socket; it
  gets the folder as an inherited descriptor (no folder path in its argv) and an environment
  without secrets (secrets.py);
- ``STATUS`` and ``QUIT`` lines get a ``OK\\tpid=..\\tuptime=..\\tidle=..\\t<noun>=N\\tclients=..`` answer.

Light imports only: the ``digitize`` command reaches its converter through this module before
anything heavy (numpy, OpenCV, click) is loaded. Nor pathlib (with re, fnmatch and urllib.parse, ~8 ms
of that command's start): what the client calls works on str paths (cache_trusted, socket_folder,
socket_file, connect); the functions that hand out a Path import pathlib when called.
"""

from __future__ import annotations

import _socket  # socket.py's own base: socket.py itself (enums, selectors) is ~4 ms of a run's client
import errno
import fcntl
import os
import pwd
import stat
import time

TYPE_CHECKING = False  # as typing.TYPE_CHECKING (type checkers take it so), without importing typing
if TYPE_CHECKING:  # imported by the client of every `digitize run`: typing costs it ~3 ms
    import socket
    from collections.abc import Iterable, Sequence
    from pathlib import Path


def _path(path: str | os.PathLike) -> Path:
    """``pathlib.Path(path)``, pathlib imported on first use (never by a run's client)."""
    from pathlib import Path

    return Path(path)

try:  # CPython's own SHA-256: importing hashlib loads OpenSSL (~5-10 ms of every `digitize` client)
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover - another Python
    from hashlib import sha256 as _sha256

SOCKET_PATH_MAX = 107  # bytes in a unix socket's path (sun_path, with its NUL)
STOP_WAIT = 30.0  # seconds `stop` waits for a server to finish work in progress
KINDS = ("validator", "converter")  # socket name prefixes
SYSTEM_DIR = "/usr/local/lib/digitize"  # setup.sh's root-owned copies for every user; DIGITIZE_SYSTEM_DIR moves it


def system_folder() -> str:
    """Where setup.sh, as root, installs what every account runs: veraPDF's jars and validator, the
    page workers' Tesseract build (absolute; each user checks it with :func:`trusted_path`)."""
    return os.path.abspath(os.environ.get("DIGITIZE_SYSTEM_DIR") or SYSTEM_DIR)


def cache_dir() -> Path:
    """Absolute: a resident server runs from / (so it never holds a run's folder busy).

    ``$DIGITIZE_CACHE`` or ``$HOME/.cache/digitize`` only if :func:`trusted_path` says no other
    account can change it: the jars and class archive found there run as us, and ``sudo -E`` or
    ``su`` keep another user's HOME. Otherwise this account's own home from the password database."""
    return _path(cache_folder())


def cache_folder() -> str:
    """:func:`cache_dir` as a str."""
    chosen = _chosen_cache()
    if trusted_path(chosen, must_exist=False):
        return chosen
    try:
        home = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:  # no account entry: a cache nobody may trust is no cache
        home = "/nonexistent"
    fallback = os.path.join(os.path.abspath(home), ".cache", "digitize")
    if chosen not in _ignored:
        _ignored.add(chosen)
        import logging  # here only: the `digitize` client imports this module and rarely logs

        logging.getLogger("digitize").warning(
            "ignoring cache folder %s: it or a folder above it belongs to another account or is writable by others;"
            " using %s", chosen, fallback)
    return fallback


_ignored: set[str] = set()


class warnings_unheard:
    """``with warnings_unheard():`` cache folders first warned about inside are not remembered as
    warned: a converter's child reads a run's settings with logging off (zygote_server._serves), and
    the run, reading them again, must still say it once."""

    def __enter__(self) -> None:
        self._before = set(_ignored)

    def __exit__(self, *_) -> None:
        _ignored.intersection_update(self._before)


def _chosen_cache() -> str:
    """The cache asked for, absolute and normalised, so that the folder :func:`trusted_path` checks
    (it normalises) is the one used ("link/.." is not where "link" leads)."""
    chosen = os.environ.get("DIGITIZE_CACHE")
    if not chosen:
        home = os.path.expanduser("~")
        if home.startswith("~"):
            raise RuntimeError("Could not determine home directory.")  # as pathlib.Path.home()
        chosen = os.path.join(home, ".cache", "digitize")
    return os.path.abspath(chosen)


def cache_trusted() -> bool:
    """Whether :func:`cache_dir` takes the cache folder asked for (and so has nothing to warn about)."""
    return trusted_path(_chosen_cache(), must_exist=False)


def trusted_path(path: os.PathLike | str, must_exist: bool = True, passed: set[str] | None = None) -> bool:
    """Whether no other account can change PATH: it, every folder above it and every link on the way
    (as written and as resolved) belong to root or this effective user, and none is writable by
    group or others, except a root-owned sticky folder on the way (/tmp). Missing trailing parts
    pass unless MUST_EXIST (we would create them).

    PASSED, shared by the checks of one moment (a classpath's 20 jars in one folder), holds the
    folders above a path that passed already: each is looked at once, not once per jar."""
    path = os.path.abspath(path)
    for candidate in dict.fromkeys((path, os.path.realpath(path))):
        for step in [*_folders_above(candidate), candidate]:
            if passed is not None and step != candidate and step in passed:
                continue
            try:
                info = os.lstat(step)
            except FileNotFoundError:
                if must_exist:
                    return False
                break
            except OSError:
                return False
            if info.st_uid not in (0, os.geteuid()):
                return False
            if stat.S_ISLNK(info.st_mode):
                continue
            sticky_root = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX and info.st_uid == 0
            if info.st_mode & 0o022 and not (sticky_root and step != candidate):
                return False
            if passed is not None and step != candidate:
                passed.add(step)  # a folder above, judged as such (a sticky /tmp passes only there)
    return True


def _folders_above(path: str) -> list[str]:
    """The folders above an absolute, normalised PATH, from / down: "/a/b/c" -> ["/", "/a", "/a/b"]."""
    above, parent = [], os.path.dirname(path)
    while path != parent:
        above.append(parent)
        path, parent = parent, os.path.dirname(parent)
    return above[::-1]


def socket_dir(folder_setting: str = "") -> Path:
    """The sockets' folder: ``[validator] dir``, else $XDG_RUNTIME_DIR/digitize, else the cache's run/.

    A runtime folder not owned by this user (root's, kept by ``su`` or ``sudo -E`` from another
    user's session) is not ours to serve from: it is ignored."""
    return _path(socket_folder(folder_setting))


def socket_folder(folder_setting: str = "") -> str:
    """:func:`socket_dir` as a str (absolute, normalised)."""
    if folder_setting:
        return os.path.abspath(folder_setting)
    runtime = runtime_dir()
    return os.path.normpath(os.path.join(runtime, "digitize")) if runtime else os.path.join(cache_folder(), "run")


def runtime_dir() -> str | None:
    """$XDG_RUNTIME_DIR if it is this user's own folder (a real one, writable by no one else), else
    None: ``su`` and ``sudo -E`` keep the caller's, which is not ours to use."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime or not os.path.isabs(runtime):
        return None
    try:
        info = os.stat(runtime, follow_symlinks=False)
    except OSError:
        return None
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
        return runtime
    return None


class UnsafeFolder(OSError):
    """A socket folder, or a folder or link on the way to it, that someone else could change."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_folders: dict[str, int] = {}  # verified socket folder -> its descriptor, opened once per process
PROC_FD = "/proc/self/fd/"


def _trusted(info: os.stat_result) -> bool:
    return info.st_uid in (0, os.getuid())


def _may_hold(info: os.stat_result) -> bool:
    """Whether a folder we pass through keeps its entries ours: writable by its owner only, or a
    root-owned sticky folder like /tmp (no one may rename or remove another's entry there)."""
    return _trusted(info) and (not info.st_mode & 0o022 or (bool(info.st_mode & stat.S_ISVTX) and info.st_uid == 0))


def open_folder(folder: Path | str, create: bool = True) -> int:
    """Open FOLDER from / one component at a time without following anything another user could
    have made, creating what is missing (0700); its descriptor. A link is followed only when it is
    root's or ours and lies in a folder that passed. FOLDER itself must be ours and private: made
    0700 if this call created it or it is one of digitize's own (:func:`_own_folders`); any other
    (a configured ``[validator] dir`` the operator shares with a group) is refused, never chmodded."""
    parts = [p for p in os.path.normpath(os.path.abspath(folder)).split("/") if p]
    fd = os.open("/", _DIR_FLAGS)
    links = 0
    created = False  # whether the last folder opened was made by this call
    try:
        if not _may_hold(os.fstat(fd)):
            raise UnsafeFolder("/ is writable by others")
        while parts:
            name = parts[0]
            if name == ".." or links > 40:
                raise UnsafeFolder(f"{folder}: a link leads through '..' or loops")
            try:
                child = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    created = len(parts) == 1
                except FileExistsError:
                    pass
                continue  # opened and checked on the next round
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(info.st_mode) or not _trusted(info):
                    raise UnsafeFolder(f"{folder}: {name} is not a folder or link of root or this user") from None
                links += 1
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    fd, old = os.open("/", _DIR_FLAGS), fd
                    os.close(old)
                parts[:1] = [p for p in target.split("/") if p and p != "."]
                continue
            os.close(fd)
            fd = child
            del parts[0]
            if parts and not _may_hold(os.fstat(fd)):
                raise UnsafeFolder(f"{folder}: a folder on the way is writable by others, or not root's or ours")
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise UnsafeFolder(f"{folder} belongs to uid {info.st_uid}, not to this user")
        if info.st_mode & 0o077:
            if not created and os.path.normpath(os.path.abspath(folder)) not in _own_folders():
                raise UnsafeFolder(f"{folder} is open to its group or others (mode {info.st_mode & 0o777:o}) and"
                                   " digitize changes no folder it did not make: chmod 700 it, or name a new one")
            os.fchmod(fd, 0o700)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _own_folders() -> set[str]:
    """The socket folders digitize names itself ($XDG_RUNTIME_DIR/digitize, the cache's run/), whose
    mode it may set: nobody else's files are in them."""
    runtime = runtime_dir()
    return {os.path.normpath(p) for p in ([os.path.join(runtime, "digitize")] if runtime else [])
            + [os.path.join(cache_folder(), "run")]}


def folder_fd(folder: Path | str) -> int:
    """FOLDER's descriptor, opened (and checked) once per process; opened again only if the
    folder at that path was replaced (a logout removes $XDG_RUNTIME_DIR, say)."""
    key = os.path.normpath(os.path.abspath(folder))
    fd = _folders.get(key)
    if fd is not None:
        try:
            now, held = os.stat(key, follow_symlinks=True), os.fstat(fd)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except OSError:
            pass
        del _folders[key]
        try:
            os.close(fd)
        except OSError:
            pass
    fd = _folders[key] = open_folder(key)
    return fd


def anchored(path: Path | str) -> str:
    """PATH (a file in a socket folder) as a name reached through the folder's descriptor, not the
    path again. Already such a name (a server is handed one): as is."""
    text = os.fspath(path)
    if text.startswith(PROC_FD):
        return text
    folder, name = os.path.split(text)
    fd = folder_fd(folder)
    return f"{PROC_FD}{fd}/{name}" if os.path.isdir(PROC_FD) else os.path.join(folder, name)


def anchor_fd(path: Path | str) -> int | None:
    """The descriptor number in an anchored name (/proc/self/fd/N/name), else None."""
    text = os.fspath(path)
    if not text.startswith(PROC_FD):
        return None
    number = text[len(PROC_FD):].partition("/")[0]
    return int(number) if number.isdigit() else None


def private(folder: Path | str) -> bool:
    """Whether FOLDER is (now) a private folder of this user reached through trusted folders only."""
    return folder_problem(folder) is None


def folder_problem(folder: Path | str) -> str | None:
    """Why FOLDER cannot hold this user's sockets (then no resident server runs), or None."""
    try:
        folder_fd(folder)
    except OSError as e:
        return str(e) if isinstance(e, UnsafeFolder) else f"{folder}: {e.strerror or e}"
    return None


def open_file(path: Path | str, flags: int, mode: int = 0o600) -> int:
    """Open a file of a socket folder (lock, log, claim) through the folder's descriptor, never
    through a link (``O_NOFOLLOW``), and only if it is a regular file of this user."""
    fd = os.open(anchored(path), flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        raise UnsafeFolder(f"{path} is not a file of this user")
    return fd


def stamp(words: Iterable[str], files: Iterable[str | os.PathLike] = ()) -> str:
    """Short hash of WORDS and the sizes and times of FILES: a rebuilt jar or edited module changes it."""
    parts = list(words)
    for entry in files:
        try:
            info = os.stat(entry)
            parts.append(f"{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            parts.append("-")
    return _sha256(" ".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:12]


NAMESPACES = ("mnt", "pid", "user", "net", "ipc", "uts", "cgroup")
STATUS_FIELDS = ("NoNewPrivs", "Seccomp", "Seccomp_filters", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def _namespace(name: str) -> str:
    """This process's namespace NAME (its inode under /proc/self/ns), or "-" where there is none."""
    try:
        return str(os.stat(f"/proc/self/ns/{name}").st_ino)
    except OSError:
        return "-"


def _proc_text(name: str) -> str:
    try:
        with open(f"/proc/self/{name}", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return "-"


def confinement() -> list[str]:
    """What confines this process and a fork keeps of its launcher, not of the client it serves: its
    namespaces (a systemd PrivateTmp=/ProtectSystem= unit has its own mounts), its cgroup (MemoryMax=),
    its seccomp filter, NoNewPrivs and capabilities. A server's socket is named after them, so that a
    sandboxed run never reaches a server started outside its sandbox, nor the other way round (one
    server per cgroup: a desktop's terminal tabs may each get theirs). Read once per process (~0.2
    CPU-ms: seven stats and two /proc files); a forked child reads its own."""
    global _confinement
    if _confinement is None or _confinement[0] != os.getpid():
        _confinement = os.getpid(), _read_confinement()
    return list(_confinement[1])


_confinement: tuple[int, list[str]] | None = None


def _read_confinement() -> list[str]:
    status = [line.replace("\t", " ") for line in _proc_text("status").splitlines()
              if line.partition(":")[0] in STATUS_FIELDS]
    return [*(f"ns/{name}={_namespace(name)}" for name in NAMESPACES),
            "cgroup=" + " ".join(_proc_text("cgroup").split()), *status]


def socket_path(folder: Path | str, kind: str, key: str) -> Path | None:
    """FOLDER/KIND-KEY.sock, or None when it would not fit a socket address or FOLDER is not private."""
    path = socket_file(folder, kind, key)
    return None if path is None else _path(path)


def socket_file(folder: Path | str, kind: str, key: str) -> str | None:
    """:func:`socket_path` as a str."""
    path = os.path.join(folder, f"{kind}-{key}.sock")
    if len(os.fsencode(path)) > SOCKET_PATH_MAX or not private(folder):
        return None
    return path


# Run by /bin/sh: start the server in the background, in its own session, with no inherited stdio (so
# no shell or CI runner waits on it), and print its pid. Its output goes to the log, the shell's
# stderr (opened by us, O_NOFOLLOW). A file the server dumps at exit ($dump, e.g. veraPDF's class
# archive) is kept (as $keep) only from a server that served and stopped normally, not from one that
# lost a start race.
_LAUNCH = """
dump=$1 keep=$2; shift 2
if [ -n "$dump" ]; then
  ( "$@" && [ -s "$dump" ] && mv -f "$dump" "$keep"; rm -f "$dump" ) </dev/null >&2 &
else
  "$@" </dev/null >&2 &
fi
echo $!
"""


def server_environment() -> dict[str, str]:
    """What a resident server and its runs get of ours: everything but secrets (a run needs none)."""
    from .secrets import tool_environment

    return tool_environment()


def launch(command: Sequence[str], log: Path, dump: Path | None = None, keep: Path | None = None,
           env: dict[str, str] | None = None) -> int:
    """Start COMMAND detached (own session, cwd /, output appended to LOG, no secrets in its
    environment (ENV, else server_environment()), the socket folder's descriptor inherited for the
    anchored names in COMMAND); its pid."""
    import subprocess  # only when launching: the command's start path stays light

    out_fd = open_file(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        folders = {n for n in map(anchor_fd, [*command, anchored(log)]) if n is not None}
        out = subprocess.run(["/bin/sh", "-c", _LAUNCH, "sh", str(dump or ""), str(keep or ""), *command],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=out_fd, pass_fds=sorted(folders),
                             env=server_environment() if env is None else env, start_new_session=True, cwd="/", timeout=30,
                             check=True).stdout
    finally:
        os.close(out_fd)
    return int(out)


class ResidentServer:
    """Where one resident server listens, and the command that starts it. A plain class, not a
    dataclass: importing dataclasses (and inspect with it) costs every ``digitize`` client ~12 ms."""

    def __init__(self, socket: Path | str, command: tuple[str, ...] = ()):
        self._socket, self.command = os.fspath(socket), tuple(command)  # a str: see _path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.socket!r})"

    @property
    def socket(self) -> Path:
        return _path(self._socket)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash(tuple(vars(self).values()))

    @property
    def lock(self) -> Path:
        """Held by the server from before start-up to exit: 'serving or starting', atomically."""
        return self.socket.with_name(self.socket.name + ".lock")

    @property
    def log(self) -> Path:
        return self.socket.with_suffix(".log")

    @property
    def claim(self) -> Path:
        """Made by the process that launches the server (see claim_launch)."""
        return self.socket.with_name(self.socket.name + ".launch")

    def launch(self) -> int:
        return launch(self.command, self.log)

    def argument(self) -> str:
        """How a launched server is told its socket: through the folder's descriptor it inherits,
        so no folder path shows in its argv and it never looks the path up again."""
        return anchored(self.socket)


def alive(pid: int | None) -> bool:
    """Whether PID runs; a zombie does not (a container's init may never reap a detached server)."""
    if not pid:
        return False
    if os.path.exists("/proc/self/stat"):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def cpu_seconds(pid: int) -> float | None:
    """CPU time PID has used (user + system, its own), or None if it is gone or the system does not say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def lock_holder(lock: Path) -> int | None:
    """None if no server holds LOCK, else the pid it wrote there (0 if not yet written)."""
    try:
        fd = open_file(lock, os.O_RDWR | os.O_CREAT)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a server starting meanwhile retries for 200 ms
    except OSError:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else 0
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def hold_lock(lock: Path) -> int | None:
    """For a server starting: take LOCK for life and write our pid in it; None if another holds it.

    A client probing :func:`lock_holder` holds it for microseconds, hence the brief retries.
    """
    fd = open_file(lock, os.O_RDWR | os.O_CREAT)
    for _ in range(10):
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            time.sleep(0.02)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd
    os.close(fd)
    return None


class Connection(_socket.socket):
    """A connection to a server (:func:`connect`): the socket that socket.socket builds on, with its
    ``with`` (which closes it); every other method a client uses (sendall, recv, settimeout, sendmsg
    for :func:`send_fds`) is _socket's own."""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def can_pass_fds() -> bool:
    """Whether this system's unix sockets carry descriptors (``socket.send_fds`` exists)."""
    return hasattr(_socket, "AF_UNIX") and hasattr(_socket, "SCM_RIGHTS") and hasattr(_socket.socket, "sendmsg")


def send_fds(sock: _socket.socket, buffers: list[bytes], fds: list[int]) -> int:
    """``socket.send_fds``: BUFFERS with the descriptors FDS attached (SCM_RIGHTS); the bytes sent."""
    import array

    return sock.sendmsg(buffers, [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))])


def peer(sock: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a unix socket, if the system says (Linux)."""
    import struct

    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i")))
    except (OSError, AttributeError):
        return None
    return pid, uid


def connect(path: Path | str, timeout: float = 5) -> Connection | None:
    """A connection to the server at PATH, if one listens there and runs as this user: the kernel
    says who listens (SO_PEERCRED), so nothing (descriptors, environment, paths) goes to another.
    A server whose backlog is full (slow to accept under load) is waited for up to TIMEOUT s: a
    socket with a timeout meets EAGAIN there at once, which is not "nobody listens"."""
    sock = Connection(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.connect(anchored(path))
                break
            except BlockingIOError:  # EAGAIN: its backlog is full; a busy server is still a server
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
        if hasattr(_socket, "SO_PEERCRED") and (peer(sock) or (0, -1))[1] != os.getuid():
            raise UnsafeFolder(f"{path}: the server there is not this user's")
    except OSError:
        sock.close()
        return None
    sock.settimeout(None)
    return sock


_launched: dict[Path, int] = {}  # socket -> pid of the server this process launched for it


def _drop(path: Path) -> None:
    try:
        os.unlink(anchored(path))
    except OSError:
        pass


CLAIM_SECONDS = 10.0  # a launched server that holds no lock by then has failed; another may try


def claim_launch(server: ResidentServer) -> bool:
    """Whether this process may launch SERVER now: the first to create its claim file. Processes
    that start together (a batch's workers, the first runs after an idle-out) would otherwise each
    launch one, and all but one would start up only to find the lock taken."""
    for _ in range(2):
        try:
            os.close(open_file(server.claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            try:
                if time.time() - os.stat(anchored(server.claim), follow_symlinks=False).st_mtime < CLAIM_SECONDS:
                    return False  # being launched by another process
                os.unlink(anchored(server.claim))  # stale: that launch failed long ago
            except FileNotFoundError:
                pass
        except OSError:
            return True  # no claims possible here: the lock still keeps one server
    return False


def reach(server: ResidentServer, wait: float) -> Connection | None:
    """Connect, launching SERVER if none serves or starts; None after WAIT s or two failed launches."""
    deadline = time.monotonic() + wait
    launches = 0
    while True:
        sock = connect(server.socket)
        if sock is not None:
            _drop(server.claim)  # up: the next launch (after an idle-out, a stop) must not wait for it
            return sock
        if lock_holder(server.lock) is not None:
            _drop(server.claim)  # the server holds its lock: the claim has done its work
        elif not alive(_launched.get(server.socket)):
            if launches:
                _drop(server.claim)  # ours, and what we launched died: the retry may go at once
            if launches == 2:
                return None
            if claim_launch(server):
                _launched[server.socket] = server.launch()
                launches += 1
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


class Lines:
    """A connection's answer lines, buffered: two lines that come in one read (a child's ``OK`` and,
    for a run that fails at once, its ``EXIT``) are both kept."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.rest = b""

    def next(self, timeout: float | None) -> bytes | None:
        """The next line without its newline; None if the peer closed first."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.rest:
            chunk = self.sock.recv(4096)
            if not chunk:
                return None
            self.rest += chunk
        line, _, self.rest = self.rest.partition(b"\n")
        return line


def read_line(sock: socket.socket, timeout: float) -> bytes:
    """One answer line (without its newline); b"" if the server closed first."""
    return Lines(sock).next(timeout) or b""


def status_line(pid: int, uptime: float, idle: float, noun: str, served: int, clients: int) -> str:
    """What a server answers to STATUS and QUIT (DigitizeValidator.java writes the same)."""
    return f"OK\tpid={pid}\tuptime={uptime:.1f}\tidle={idle:.1f}\t{noun}={served}\tclients={clients}"


class ServerInfo:
    """One resident server as ``digitize servers`` shows it (a plain class: see ResidentServer)."""

    def __init__(self, socket: Path, pid: int, state: str, uptime: float = 0.0, idle: float = 0.0,
                 served: int = 0, noun: str = "served", clients: int = 0):
        self.socket = socket
        self.pid = pid  # 0 while a starting server has not written it yet
        self.state = state  # "starting", "serving", "stopping" (finishing work after QUIT) or "stopped"
        self.uptime, self.idle = uptime, idle
        self.served, self.noun = served, noun  # files validated or runs converted: "validated", "converted"
        self.clients = clients  # other connections than the asking one

    def __repr__(self) -> str:
        return f"ServerInfo({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    @property
    def kind(self) -> str:
        return self.socket.name.partition("-")[0]


def ask(path: Path, line: str, timeout: float = 5) -> dict[str, str] | None:
    """STATUS or QUIT on a fresh connection: the server's key=value answer, or None if none answers."""
    sock = connect(path)
    if sock is None:
        return None
    try:
        sock.sendall(line.encode() + b"\n")
        status, *fields = read_line(sock, timeout).decode("utf-8", "replace").split("\t")
    except OSError:
        return None
    finally:
        sock.close()
    return dict(f.partition("=")[::2] for f in fields) if status == "OK" else None


_NOT_SERVED = {"pid", "uptime", "idle", "clients", "threads"}  # the other keys of a STATUS answer


def _info(path: Path, pid: int, answer: dict[str, str] | None) -> ServerInfo:
    if answer is None:
        return ServerInfo(path, pid, "starting")
    noun, served = next(((k, v) for k, v in answer.items() if k not in _NOT_SERVED),
                        ("served", "0"))
    return ServerInfo(path, int(answer["pid"]), "serving", float(answer["uptime"]), float(answer["idle"]),
                      int(served), noun, int(answer["clients"]))


def servers(folder: Path, kind: str | None = None) -> list[ServerInfo]:
    """The resident servers (of KIND, else all kinds) with a socket in FOLDER, serving or starting."""
    found = []
    try:
        names = os.listdir(folder_fd(folder))
    except OSError:
        return found  # no folder, or not a safe one: no server of ours there
    for prefix in [kind] if kind else KINDS:
        for lock in sorted(folder / n for n in names if n.startswith(f"{prefix}-") and n.endswith(".sock.lock")):
            pid = lock_holder(lock)
            if pid is not None:
                path = lock.with_suffix("")
                found.append(_info(path, pid, ask(path, "STATUS")))
    return found


def stop_servers(folder: Path, kind: str | None = None, wait: float = STOP_WAIT) -> list[ServerInfo]:
    """Ask every resident server (of KIND) in FOLDER to exit (a starting one once it serves); the ones found."""
    stopped = []
    for info in servers(folder, kind):
        deadline = time.monotonic() + wait
        lock = ResidentServer(info.socket).lock
        answer = ask(info.socket, "QUIT")
        while answer is None and lock_holder(lock) is not None and time.monotonic() < deadline:
            time.sleep(0.05)  # still starting: it binds once warm
            answer = ask(info.socket, "QUIT")
        info = _info(info.socket, info.pid, answer) if answer else info
        while alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        info.state = "stopping" if alive(info.pid) else "stopped"
        _drop(ResidentServer(info.socket).claim)  # the next run may launch one at once
        stopped.append(info)
    return stopped
