"""The resident converter's server: warm once, then fork a child per ``digitize run`` (see zygote.py).

One thread (none may exist when forking) accepts requests, forks, reaps children and turns a
client's INT/TERM or disappearance into SIGINT for its child. The child takes over the client's
descriptors, environment, folder, umask, nice value and soft limits, then runs ``cli.main`` as a
local run does, and what the interpreter does at exit; the parent never converts anything.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import time
from pathlib import Path

from . import resident
from .zygote import STDIO

NOUN = "converted"
MAX_REQUEST = 4 << 20  # bytes of a RUN body: argv and environment, which the kernel caps near this (ARG_MAX)
MAX_LINE = 64  # "RUN <size>", "STATUS", "QUIT"
REQUEST_WAIT = 5.0  # seconds for a whole request: a client that drips bytes cannot hold the loop
CHUNK = 65536
DECLINED = 75  # a child's exit when the run's settings are not this converter's (EX_TEMPFAIL; a run's own
# exit codes stop at 15, so a run that got OK does not exit with this)


def _say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} converter {os.getpid()}: {text}", file=sys.stderr, flush=True)


def _import_lazy_modules() -> None:
    """Modules that libraries import on first use, which every child would import again (~0.05
    CPU-s a run, py-spy): lxml for pikepdf's XMP (the PDF/A metadata), numpy.ma (np.unique),
    numpy.random (the encoder's sampling), Pillow's image plugins (Image.open); and what a run
    imports on its way (``python -X importtime`` of a child, whose stderr is the client's): the
    signing module (the CLI takes the PIN out of the environment first) with its key helpers,
    and the page workers' process pool's fork and lock modules; and what a page imports on its way:
    numpy.fft (the line pitch of a page read in pieces), pikepdf.jbig2 with packaging.version (a
    JBIG2 image's decoder) and the ascii codec (tests/test_zygote.py checks a page imports nothing else)."""
    import importlib

    from PIL import Image

    for name in ("lxml.etree", "numpy.ma", "numpy.random", "digitize.signing", "multiprocessing.synchronize",
                 "multiprocessing.popen_fork", "numpy.fft", "pikepdf.jbig2", "encodings.ascii"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    Image.preinit()


def warm_up(language: str) -> None:
    """What every child would otherwise do itself: the imports, the models, fixed resources."""
    from . import cli, convert, ocr, pdfa, poppler, textlayer  # noqa: F401 - what every child would import
    from .errors import DigitizeError

    # what every run's pages would build (~50 ms): the text layer's font and the sRGB profile
    # carry fixed dates, so one copy serves every child
    textlayer.glyphless_truetype()
    pdfa.srgb_icc()
    poppler.version()  # asked once, here, instead of a process per run (children inherit it)
    _import_lazy_modules()
    try:
        ocr.warm(language, orientation=True)
    except DigitizeError as e:
        _say(f"models not loaded ({e}); children load their own")


def serve(start_env: dict[str, str], socket_arg: str, idle: str, language: str) -> int:
    """The server process: lock, warm up, listen until idle or told QUIT; 3 if another one serves."""
    path = Path(socket_arg)
    lock = resident.hold_lock(resident.ResidentServer(path).lock)
    if lock is None:
        print(f"another converter serves {path}", flush=True)
        return 3
    # the lock is released when the server stops listening, or at the latest when it exits
    warm_up(language)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.unlink()  # stale: we hold the lock
    except FileNotFoundError:
        pass
    listener.bind(str(path))
    listener.listen(64)
    listener.setblocking(False)  # accept() never waits: select() says when, and closing drains the queue
    added = {k: v for k, v in os.environ.items() if start_env.get(k) != v}  # set while importing
    _say(f"serving {path} (idle {float(idle):g} s, models {language})")
    import gc

    gc.freeze()  # the warm heap is never scanned again: forked children do not copy it for the GC
    served = _Server(listener, path, float(idle), lock, added).run()
    _say(f"stopped after {served} runs")
    return 0


def _loaded_files() -> dict[str, tuple[int, int, int]]:
    """Every module and shared library this process loaded, with its inode, size and time, and the
    Debian libtesseract that setup's loaded build stands in for (tesslib.stands_in_for)."""
    from . import tesslib

    paths = {getattr(m, "__file__", None) for m in list(sys.modules.values())} | {tesslib.stands_in_for()}
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6:
                    paths.add(fields[5].rstrip("\n"))
    except OSError:
        pass
    found = {}
    for p in paths:
        if p and p.startswith("/"):
            try:
                info = os.stat(p)
            except OSError:
                continue
            found[p] = (info.st_ino, info.st_size, info.st_mtime_ns)
    if tesslib.build_outdated():  # Debian's was updated before this look: changed already
        found[tesslib.stands_in_for()] = (-1, -1, -1)
    return found


def _changed(files: dict[str, tuple[int, int, int]]) -> str | None:
    """The first loaded file that differs on disk now (an upgrade of numpy, Tesseract...), if any."""
    for p, before in files.items():
        try:
            info = os.stat(p)
        except OSError:
            return p
        if (info.st_ino, info.st_size, info.st_mtime_ns) != before:
            return p
    return None


class _Server:
    """Accept loop and child bookkeeping in one thread (no other thread may exist when forking)."""

    STALE_CHECK = 2.0  # seconds between checks that no loaded file changed on disk

    def __init__(self, listener: socket.socket, path: Path, idle: float, lock: int, added_env: dict[str, str]):
        self.listener, self.path, self.idle, self.lock, self.added_env = listener, path, idle, lock, added_env
        self.folder = _identity(path.parent)  # the socket folder, which a run's settings must name
        self.children: dict[int, tuple[socket.socket, float]] = {}  # pid -> (its client's connection, start)
        self.watched: dict[socket.socket, int] = {}  # connections that may still send INT/TERM or vanish
        self.started = self.last = self.checked = time.monotonic()
        self.served = 0
        self.stopping = False
        self.loaded = _loaded_files()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wake-up pipe tells the loop
        signal.signal(signal.SIGTERM, self._terminate)

    def _terminate(self, *_) -> None:
        self.stopping = True

    def run(self) -> int:
        import select

        while True:
            if self.listener is not None and (self.stopping or self._idle_over()):
                self._close_listener()
            if self.listener is None and not self.children:
                return self.served
            waiting = [self.wake_r, *self.watched, *([self.listener] if self.listener else [])]
            timeout = None
            if self.listener is not None and not self.children:
                timeout = max(0.0, self.last + self.idle - time.monotonic())
            ready = select.select(waiting, [], [], timeout)[0]
            if self.wake_r in ready:
                self._reap()
            for conn in ready:
                if conn is self.listener and self.listener is not None:
                    self._accept()
                elif conn in self.watched:
                    self._watch(conn)

    def _idle_over(self) -> bool:
        return not self.children and time.monotonic() - self.last >= self.idle

    def _close_listener(self) -> None:
        """Unlink first, then take what was already queued: no client is left without an answer.
        The lock goes before our children finish, so a new server may start at once."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        while self._accept():
            pass
        self.listener.close()
        self.listener = None
        os.close(self.lock)
        self.lock = -1

    def _reap(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn, start = self.children.pop(pid, (None, 0.0))
            if conn is not None:
                self.watched.pop(conn, None)
                conn.close()  # a child that died without EXIT: its client now sees the end
            code = os.waitstatus_to_exitcode(status)
            if code == DECLINED:  # not work done: a converter only such runs reach still idles out
                self.served -= 1
                _say(f"run {pid}: declined, its settings name no resident converter or another socket folder")
                continue
            _say(f"run {pid}: exit {code}, {usage.ru_utime:.2f} s user {usage.ru_stime:.2f} s sys"
                 f" (with its page workers), {time.monotonic() - start:.2f} s")
            self.last = time.monotonic()

    def _watch(self, conn: socket.socket) -> None:
        """INT/TERM from the client, or the client gone: the child stops as after a local Ctrl-C."""
        pid = self.watched[conn]
        try:
            data = conn.recv(64)  # select said readable: data or the end, no waiting
        except OSError:
            data = b""
        if not data:
            del self.watched[conn]  # nothing more to hear; the connection closes when the child is reaped
        if pid in self.children:
            os.kill(pid, signal.SIGINT)

    def _accept(self) -> bool:
        """Serve one queued connection; False if there was none."""
        try:
            conn, _ = self.listener.accept()
        except OSError:  # none queued (non-blocking, when closing), or it went away already
            return False
        fds: list[int] = []
        try:
            conn.settimeout(REQUEST_WAIT)
            if not _same_user(conn):
                return True
            command, body = _read_request(conn, fds, time.monotonic() + REQUEST_WAIT)
            conn.settimeout(REQUEST_WAIT)
            if command in (b"STATUS", b"QUIT"):
                now = time.monotonic()
                conn.sendall(resident.status_line(os.getpid(), now - self.started,
                                                  0.0 if self.children else now - self.last, NOUN,
                                                  self.served, len(self.children)).encode() + b"\n")
                self.stopping = self.stopping or command == b"QUIT"
            elif command == b"RUN" and len(fds) == len(STDIO) and _same_mounts(conn) and not self._stale():
                conn.settimeout(None)  # blocking again: parent and child share this descriptor's flags
                self._fork(conn, fds, _parse(body))
                conn = None  # kept until the child is reaped
        except Exception as e:  # noqa: BLE001 - one bad request (MemoryError too) never ends the server
            _say(f"request refused: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
        finally:
            for fd in fds:
                os.close(fd)
            if conn is not None:
                conn.close()  # without OK: the client runs locally
        return True

    def _stale(self) -> bool:
        """Whether a file we loaded changed on disk: then stop, and the client runs locally (and launches anew)."""
        now = time.monotonic()
        if now - self.checked < self.STALE_CHECK:
            return False
        self.checked = now
        changed = _changed(self.loaded)
        if changed:
            _say(f"{changed} changed on disk: stopping, a new server will load it")
            self.stopping = True
        return changed is not None

    def _fork(self, conn: socket.socket, fds: list[int], request: dict) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                code = self._child(conn, fds, request, parent)
            except BaseException:  # noqa: BLE001 - never back into the server's loop
                pass
            finally:
                os._exit(code)
        self.served += 1
        self.children[pid] = (conn, time.monotonic())
        self.watched[conn] = pid

    def _child(self, conn: socket.socket, fds: list[int], request: dict, parent: int) -> int:
        """Become the client's process, answer OK, run the CLI exactly as a local run does, answer EXIT.
        A server killed meanwhile (kill -9, the OOM killer) hands the child SIGINT: only the server
        reads the client's INT, so the child stops and cleans up as after a Ctrl-C instead of
        converting on as an orphan nobody can interrupt (but says so, see :class:`_ServerGone`)."""
        from .pageworkers import die_with_parent

        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, functools.partial(_interrupted, parent))
        die_with_parent(parent, signal.SIGINT)  # gone already: no OK, so the client runs locally
        for other in [*self.watched, *(c for c, _ in self.children.values())]:
            other.close()
        if self.listener is not None:
            self.listener.close()
        for fd in (self.wake_r, self.wake_w, self.lock, resident.anchor_fd(self.path) or -1):
            if fd >= 0:
                os.close(fd)  # the socket folder's descriptor too: a run has no business there
        _become(fds, request, self.added_env)
        if not _serves(request["argv"], self.folder):
            return DECLINED  # closed without OK: the client goes its settings' way
        conn.sendall(b"OK %d\n" % os.getpid())  # fails if the client gave up meanwhile: nothing ran
        code = _run_cli(request["argv"])
        try:
            conn.sendall(b"EXIT %d\n" % code)
        except OSError:
            pass
        return code


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of FOLDER, through the descriptor an anchored name holds (resident.anchored)."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _serves(argv: list[str], folder: tuple[int, int] | None) -> bool:
    """Whether the run's own settings (read in its folder and environment, as the run will read them)
    have it served by this converter: resident converter on, sockets in this folder. A client
    reaches a converter before it reads any setting (zygote._to_serving), so this is where a
    ``[converter] resident = false`` or another ``[validator] dir`` is honoured. Warnings are left
    to the run, which reads the settings again and says them once."""
    import logging

    from .config import load_settings
    from .zygote import command_arguments

    found = command_arguments(argv)
    logging.disable(logging.CRITICAL)
    try:
        with resident.warnings_unheard():  # a cache folder warned about here, unheard, is the run's to warn about
            settings = load_settings(found[0] if found else None)
            return (settings.converter.resident and folder is not None
                    and _identity(resident.socket_dir(settings.validator.dir)) == folder)
    except Exception:  # noqa: BLE001 - a bad setting: the client's local run reports it
        return False
    finally:
        logging.disable(logging.NOTSET)


def _same_user(conn: socket.socket) -> bool:
    """Only our own user may have us run commands (the folder is 0700 already; this is the belt)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    found = resident.peer(conn)
    return found is not None and found[1] == os.getuid()


def _same_mounts(conn: socket.socket) -> bool:
    """Whether the client sees our files: a run in another mount namespace (a PrivateTmp= unit that
    reached this socket despite its name, resident.confinement) is refused and runs locally. A client
    whose namespace we cannot read (one that made itself undumpable) is left to the socket's name."""
    found = resident.peer(conn)
    if found is None:
        return True
    if found[0] <= 0:  # a process our pid namespace cannot see: another sandbox
        _say("request refused: the client is in another pid namespace")
        return False
    try:
        same = os.stat(f"/proc/{found[0]}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return True
    if not same:
        _say(f"request refused: client {found[0]} is in another mount namespace")
    return same


def _read_request(conn: socket.socket, fds: list[int], deadline: float) -> tuple[bytes, bytes]:
    """The command word and, for RUN, its body (at most MAX_REQUEST bytes), all by DEADLINE (one
    wait for the whole request, not one per read); descriptors that came with it are added to FDS."""

    def receive(size: int) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"request not complete within {REQUEST_WAIT:g} s")
        conn.settimeout(left)
        chunk, got, _, _ = socket.recv_fds(conn, size, 3)
        fds.extend(got)
        if not chunk:
            raise ValueError("connection closed in a request")
        return chunk

    data = b""
    while b"\n" not in data:
        if len(data) > MAX_LINE:
            raise ValueError("request line too long")
        data += receive(CHUNK)
    line, _, body = data.partition(b"\n")
    command, _, size = line.strip().partition(b" ")
    if command != b"RUN":
        return command, b""
    size = int(size)
    if not 0 <= size <= MAX_REQUEST or len(body) > size:
        raise ValueError(f"request of {size} bytes refused (at most {MAX_REQUEST})")
    while len(body) < size:
        body += receive(min(CHUNK, size - len(body)))
    return command, body


def _parse(body: bytes) -> dict:
    fields = body.split(b"\0")
    argc = int(fields[5])
    env = {}
    for item in fields[6 + argc:]:
        name, sep, value = item.partition(b"=")
        if sep:
            env[os.fsdecode(name)] = os.fsdecode(value)
    limits = {}
    for item in fields[3].decode().split(","):
        if item:
            name, _, soft = item.partition(":")
            limits[name] = int(soft)
    return {"cwd": os.fsdecode(fields[0]), "umask": int(fields[1]), "priority": int(fields[2]), "limits": limits,
            "argv0": os.fsdecode(fields[4]), "argv": [os.fsdecode(a) for a in fields[6:6 + argc]], "env": env}


def _become(fds: list[int], request: dict, added_env: dict[str, str]) -> None:
    """Take over the client's stdio, environment, folder and per-process settings."""
    import resource
    import tempfile

    from . import fsutil

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    fds.clear()
    sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())  # as Python sets it up at start
    os.environ.clear()
    os.environ.update(request["env"])
    for name, value in added_env.items():  # what importing digitize sets when not set (thread limits)
        os.environ.setdefault(name, value)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    fsutil.FILE_MODE = 0o666 & ~request["umask"]  # computed at import, from the server's umask
    tempfile.tempdir = None  # chosen again from the client's TMPDIR
    if os.getpriority(os.PRIO_PROCESS, 0) != request["priority"]:
        os.setpriority(os.PRIO_PROCESS, 0, request["priority"])
    for name, soft in request["limits"].items():
        which = getattr(resource, name)
        if resource.getrlimit(which)[0] != soft:
            resource.setrlimit(which, (soft, resource.getrlimit(which)[1]))
    sys.argv = [request["argv0"], *request["argv"]]


class _ServerGone(BaseException):
    """A child's SIGINT from PR_SET_PDEATHSIG (its server died under the run): it unwinds as Ctrl-C
    does (every cleanup runs, no ``except Exception`` converts on), but is reported as what it is,
    exit 15 and one line, never 130 "interrupted", which scripts read as a person's abort."""

    MESSAGE = "digitize: the resident converter stopped under this run; run it again"


def _interrupted(parent: int, signum: int, frame) -> None:
    """The child's SIGINT: the client's Ctrl-C relayed by a living server, or its server's death."""
    if os.getppid() != parent:  # reparented: the server is gone
        raise _ServerGone
    raise KeyboardInterrupt


def _run_cli(argv: list[str]) -> int:
    """The local run's entry, then what the interpreter does at exit (threads, atexit, flush)."""
    import atexit
    import threading

    from .cli import main

    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except _ServerGone:  # a BaseException: neither click nor main() catches it
        print(_ServerGone.MESSAGE, file=sys.stderr)
        code = 15  # ExitCode.internal
    except KeyboardInterrupt:  # before main() could catch it
        code = 130
    except BaseException:  # noqa: BLE001 - main() already makes every error one line
        code = 15  # ExitCode.internal, as cli.main gives for a bug
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # the run is over; an INT now changes nothing
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    return code
