"""Resident servers: one process per user and machine that every run reaches over a unix socket.

Two kinds share this machinery, like the Gradle daemon: the veraPDF validator (a JVM whose start
costs more than checking a one-page scan, see verapdf.py) and the converter (a Python that has
paid its imports and Tesseract's model loading once, see zygote.py). For both:

- the socket lives in a private (0700) folder, so only its user can reach it;
- it is named after a stamp of what the server would run, so an upgrade or a changed setting gets
  a fresh server and the old one idles out;
- a lock file beside it is held by the server for its whole life and holds its pid: "serving or
  starting" is one atomic question, and a socket file found without the lock is stale;
- the first run that finds none launches one detached (own session, no inherited stdio, cwd /),
  so no shell, terminal or CI runner waits on it; its output goes to a log beside the socket;
- ``STATUS`` and ``QUIT`` lines get a ``OK\\tpid=..\\tuptime=..\\tidle=..\\t<noun>=N\\tclients=..`` answer.

Light imports only: the ``digitize`` command reaches its converter through this module before
anything heavy (numpy, OpenCV, click) is loaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

SOCKET_PATH_MAX = 107  # bytes in a unix socket's path (sun_path, with its NUL)
STOP_WAIT = 30.0  # seconds `stop` waits for a server to finish work in progress
KINDS = ("validator", "converter")  # socket name prefixes


def cache_dir() -> Path:
    """Absolute: a resident server runs from / (so it never holds a run's folder busy)."""
    return Path(os.environ.get("DIGITIZE_CACHE") or str(Path.home() / ".cache" / "digitize")).absolute()


def socket_dir(folder_setting: str = "") -> Path:
    """The sockets' folder: ``[validator] dir``, else $XDG_RUNTIME_DIR/digitize, else the cache's run/."""
    if folder_setting:
        return Path(folder_setting).absolute()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK):
        return Path(runtime) / "digitize"
    return cache_dir() / "run"


def private(folder: Path) -> bool:
    """Make FOLDER, mode 0700; False if it is someone else's (their socket could answer anything)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
        if info.st_uid != os.getuid():
            return False
        if info.st_mode & 0o077:
            folder.chmod(0o700)
    except OSError:
        return False
    return True


def stamp(words: Iterable[str], files: Iterable[str | os.PathLike] = ()) -> str:
    """Short hash of WORDS and the sizes and times of FILES: a rebuilt jar or edited module changes it."""
    parts = list(words)
    for entry in files:
        try:
            info = os.stat(entry)
            parts.append(f"{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            parts.append("-")
    return hashlib.sha256(" ".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:12]


def socket_path(folder: Path, kind: str, key: str) -> Path | None:
    """FOLDER/KIND-KEY.sock, or None when it would not fit a socket address or FOLDER is not private."""
    path = folder / f"{kind}-{key}.sock"
    if len(os.fsencode(path)) > SOCKET_PATH_MAX or not private(folder):
        return None
    return path


# Run by /bin/sh: start the server in the background, in its own session, with no inherited stdio (so
# no shell or CI runner waits on it), and print its pid. A file the server dumps at exit ($dump, e.g.
# veraPDF's class archive) is kept (as $keep) only from a server that served and stopped normally,
# not from one that lost a start race.
_LAUNCH = """
log=$1 dump=$2 keep=$3; shift 3
if [ -n "$dump" ]; then
  ( "$@" && [ -s "$dump" ] && mv -f "$dump" "$keep"; rm -f "$dump" ) </dev/null >>"$log" 2>&1 &
else
  "$@" </dev/null >>"$log" 2>&1 &
fi
echo $!
"""


def launch(command: Sequence[str], log: Path, dump: Path | None = None, keep: Path | None = None) -> int:
    """Start COMMAND detached (own session, cwd /, output appended to LOG); its pid."""
    import subprocess  # only when launching: the command's start path stays light

    from .config import environment_without_secrets  # a server outlives its launcher: no PIN, no keys

    out = subprocess.run(["/bin/sh", "-c", _LAUNCH, "sh", str(log), str(dump or ""), str(keep or ""), *command],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         start_new_session=True, cwd="/", timeout=30, check=True,
                         env=environment_without_secrets()).stdout
    return int(out)


@dataclass(frozen=True)
class ResidentServer:
    """Where one resident server listens, and the command that starts it."""

    socket: Path
    command: tuple[str, ...] = ()

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


def alive(pid: int | None) -> bool:
    """Whether PID runs; a zombie does not (a container's init may never reap a detached server)."""
    if not pid:
        return False
    if Path("/proc/self/stat").exists():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def lock_holder(lock: Path) -> int | None:
    """None if no server holds LOCK, else the pid it wrote there (0 if not yet written)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
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
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
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


def peer(sock: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a unix socket, if the system says (Linux)."""
    import struct

    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except (OSError, AttributeError):
        return None
    return pid, uid


def connect(path: Path, timeout: float = 5) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except OSError:
        sock.close()
        return None
    sock.settimeout(None)
    return sock


_launched: dict[Path, int] = {}  # socket -> pid of the server this process launched for it


def _drop(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


CLAIM_SECONDS = 10.0  # a launched server that holds no lock by then has failed; another may try


def claim_launch(server: ResidentServer) -> bool:
    """Whether this process may launch SERVER now: the first to create its claim file. Processes
    that start together (a batch's workers, the first runs after an idle-out) would otherwise each
    launch one, and all but one would start up only to find the lock taken."""
    for _ in range(2):
        try:
            os.close(os.open(server.claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return True
        except FileExistsError:
            try:
                if time.time() - server.claim.stat().st_mtime < CLAIM_SECONDS:
                    return False  # being launched by another process
                server.claim.unlink()  # stale: that launch failed long ago
            except FileNotFoundError:
                pass
        except OSError:
            return True  # no claims possible here: the lock still keeps one server
    return False


def reach(server: ResidentServer, wait: float) -> socket.socket | None:
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


@dataclass
class ServerInfo:
    socket: Path
    pid: int  # 0 while a starting server has not written it yet
    state: str  # "starting", "serving", "stopping" (finishing work after QUIT) or "stopped"
    uptime: float = 0.0
    idle: float = 0.0
    served: int = 0  # files validated or runs converted
    noun: str = "served"  # "validated", "converted"
    clients: int = 0  # other connections than the asking one

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


def _info(path: Path, pid: int, answer: dict[str, str] | None) -> ServerInfo:
    if answer is None:
        return ServerInfo(path, pid, "starting")
    noun, served = next(((k, v) for k, v in answer.items() if k not in {"pid", "uptime", "idle", "clients"}),
                        ("served", "0"))
    return ServerInfo(path, int(answer["pid"]), "serving", float(answer["uptime"]), float(answer["idle"]),
                      int(served), noun, int(answer["clients"]))


def servers(folder: Path, kind: str | None = None) -> list[ServerInfo]:
    """The resident servers (of KIND, else all kinds) with a socket in FOLDER, serving or starting."""
    found = []
    for prefix in [kind] if kind else KINDS:
        for lock in sorted(folder.glob(f"{prefix}-*.sock.lock")):
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
