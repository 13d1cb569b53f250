"""The resident converter ("zygote"): a warm Python that forks one child per ``digitize run``.

Every ``digitize`` process pays ~0.25 CPU-s of imports (numpy, OpenCV, pikepdf, PIL, click) and
~0.16 CPU-s loading Tesseract's models before any work: a third of the cost of a one-page scan.
A server of this user that has paid them once (resident.py: private socket folder, lock, idle
timeout, detached launch) forks a child per request. The child takes the client's stdin, stdout
and stderr (the descriptors themselves, passed with SCM_RIGHTS), its environment, working
directory, umask, nice value and resource limits, and then runs the very CLI entry a local run
runs. So config resolution, messages, logging, files and exit codes are those of a local run;
only the imports are saved. The warm parent never converts anything itself.

The socket is named after everything that shapes the warm process: digitize's version and the
sizes and times of its modules (an upgrade or an edit gets a fresh server), the interpreter and
its flags, and the environment variables read while libraries load (thread limits, Tesseract's
data and library, locale, Python's own), plus what a child cannot change back (hard limits,
nice value, groups).

Protocol, one request per connection. Client: ``RUN <n>\\n`` and n bytes of NUL-separated
fields, with its descriptors 0, 1, 2 attached. Child: ``OK <pid>\\n`` once it has taken them (the
client runs locally if this never comes), ``EXIT <code>\\n`` at the end. The client sends
``INT\\n`` or ``TERM\\n`` when it is interrupted; the server turns that, or the client vanishing,
into SIGINT for the child, which then stops and cleans up as a local Ctrl-C does.
``STATUS``/``QUIT`` are answered as by every resident server.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__, resident

ROOT = Path(__file__).resolve().parent.parent  # digitize/, pipelines/ and storage/ are imported from here
PACKAGES = ("digitize", "pipelines", "storage")  # what `digitize.cli` imports of this project
HANDSHAKE_WAIT = 20.0  # seconds for a child to take the request before the client runs it itself
TERM_WAIT = 5.0  # seconds a terminated client lets its child clean up
LIMITS = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_AS")
NOUN = "converted"
STDIO = [0, 1, 2]
# Imported inside functions by every run's page (textlayer's font, pdfa's ICC profile): ~16 ms each
# time. Only imported here; what they build carries a timestamp, so each run still builds its own.
LAZY_IMPORTS = ("fontTools.fontBuilder", "fontTools.pens.ttGlyphPen", "PIL.ImageCms")

# Environment variables read while the interpreter starts or libraries load (libgomp, OpenBLAS,
# OpenCV, NumPy, Tesseract's data, glibc's malloc), which a child could not apply any more.
LOAD_TIME_ENV = ("OMP_THREAD_LIMIT", "OPENBLAS_NUM_THREADS", "TESSDATA_PREFIX", "DIGITIZE_LIBTESSERACT")
LOAD_TIME_PREFIXES = ("PYTHON", "OMP_", "GOMP_", "KMP_", "OPENBLAS", "GOTO", "MKL_", "NUMEXPR", "OPENCV_",
                      "NPY_", "NUMPY_", "LC_", "LANG", "LD_", "GLIBC_TUNABLES", "MALLOC_")


def _loads_at_start(name: str) -> bool:
    return name in LOAD_TIME_ENV or name.startswith(LOAD_TIME_PREFIXES)


def _module_files() -> list[str]:
    """This project's Python files: an edit or an upgrade must not be served by old code."""
    found = []
    folders = [ROOT / p for p in PACKAGES]
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(".py"):
                found.append(entry.path)
            elif entry.is_dir() and entry.name != "__pycache__":
                folders.append(Path(entry.path))
    return sorted(found)


def _key() -> str:
    import resource

    words = [__version__, str(ROOT), sys.prefix, os.path.realpath(sys.executable), sys.version, repr(sys.flags),
             repr(sys.warnoptions), repr(sys._xoptions), f"gid={os.getgid()}:{sorted(os.getgroups())}",
             f"nice={os.getpriority(os.PRIO_PROCESS, 0)}",
             *(f"{name}={resource.getrlimit(getattr(resource, name))[1]}" for name in LIMITS),
             *(f"{k}={v}" for k, v in sorted(os.environ.items()) if _loads_at_start(k))]
    return resident.stamp(words, _module_files())


# -- client ---------------------------------------------------------------------------------


def _run_arguments(argv: list[str]) -> str | None | bool:
    """For ``digitize [global options] run ...``: the --config value (None if not given); False for
    anything else (other commands, --help, --version, a usage error), which runs locally."""
    if "-h" in argv or "--help" in argv or "--version" in argv:
        return False
    config = None
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            config = next(args, None)
            if config is None:
                return False
        elif arg.startswith("--config="):
            config = arg.partition("=")[2]
        elif arg in ("--verbose", "--quiet") or (len(arg) > 1 and arg[0] == "-" and set(arg[1:]) <= {"v", "q"}):
            continue
        else:
            return config if arg == "run" else False
    return False


@dataclass(frozen=True)
class ConverterServer(resident.ResidentServer):
    """The resident converter of this interpreter, environment and code; its command is made at launch."""

    idle: float = 600.0
    language: str = "vie+eng"  # models it loads (the launching run's), shared by its children

    def launch(self) -> int:
        import subprocess  # for the interpreter's flags (-X, -W, -O ...), which the server gets too

        boot = ("import os, sys; env = dict(os.environ); sys.path.insert(0, sys.argv[1]); "
                "from digitize.zygote import serve; sys.exit(serve(env, *sys.argv[2:]))")
        return resident.launch([sys.executable, *subprocess._args_from_interpreter_flags(), "-c", boot, str(ROOT),
                                str(self.socket), f"{self.idle:g}", self.language], self.log)


def converter_server(settings) -> ConverterServer | None:
    """None when the resident converter is off or its socket folder is unusable."""
    if not settings.converter.resident or not hasattr(socket, "AF_UNIX") or not hasattr(socket, "send_fds"):
        return None
    path = resident.socket_path(resident.socket_dir(settings.validator.dir), "converter", _key())
    if path is None:
        return None
    return ConverterServer(path, idle=settings.converter.idle, language=settings.convert.language)


def handover(argv: list[str]) -> int | None:
    """Run ``digitize ARGV`` in a child of the resident converter: its exit code, or None when this
    process must run it itself (not ``run``, converter off or not serving yet: then it is launched)."""
    config = _run_arguments(argv)
    if config is False:
        return None
    try:
        from .config import load_settings

        server = converter_server(load_settings(config))
    except Exception:  # noqa: BLE001 - the local run reports a bad configuration properly
        return None
    if server is None:
        return None
    sock = resident.connect(server.socket)
    if sock is None:
        try:
            if resident.lock_holder(server.lock) is None:
                server.launch()  # for the next run; this one runs here, without waiting
        except Exception as e:  # noqa: BLE001 - best effort, for later runs; this one runs here anyway
            _note(server, f"client {os.getpid()} could not launch a converter: {type(e).__name__}: {e}")
        return None
    with sock:
        return _delegate(sock, argv, server)


def _note(server: resident.ResidentServer, line: str) -> None:
    try:
        with open(server.log, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
    except OSError:
        pass


def _request(argv: list[str]) -> bytes:
    import resource

    limits = ",".join(f"{name}:{resource.getrlimit(getattr(resource, name))[0]}" for name in LIMITS)
    fields = [os.fsencode(os.getcwd()), b"%d" % _umask(), b"%d" % os.getpriority(os.PRIO_PROCESS, 0),
              limits.encode(), os.fsencode(sys.argv[0] if sys.argv else "digitize"), b"%d" % len(argv),
              *map(os.fsencode, argv),
              *(k + b"=" + v for k, v in os.environb.items())]
    payload = b"\0".join(fields)
    return b"RUN %d\n" % len(payload) + payload


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


class _Abandon(Exception):
    """A second signal, or a terminated client's child slow to clean up: stop waiting for it."""


def _abandon(*_) -> None:
    raise _Abandon


class _Forward:
    """Signal handler of a waiting client: the first INT/TERM/HUP goes to the child, a second ends the wait."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.sock: socket.socket | None = None
        self.got = 0
        self.before = {}
        for signum in self.SIGNALS:
            handler = signal.getsignal(signum)
            if handler is not signal.SIG_IGN:  # e.g. a background job ignores SIGINT, as its local run would
                self.before[signum] = handler
                signal.signal(signum, self)

    def __call__(self, signum, frame) -> None:
        if self.got:
            raise _Abandon
        self.got = signum
        if signum != signal.SIGINT:
            signal.signal(signal.SIGALRM, _abandon)
            signal.setitimer(signal.ITIMER_REAL, TERM_WAIT)
        self.tell()

    def tell(self) -> None:
        if self.sock is not None and self.got:
            try:
                self.sock.sendall(b"INT\n" if self.got == signal.SIGINT else b"TERM\n")
            except OSError:
                pass

    def restore(self) -> None:
        for signum, handler in self.before.items():
            signal.signal(signum, handler)


def _delegate(sock: socket.socket, argv: list[str], server: ConverterServer) -> int | None:
    try:
        for fd in STDIO:
            os.fstat(fd)
    except OSError:
        return None  # a closed one: run here, where Python handles it as usual
    forward = _Forward()
    code = None
    try:
        if _handed_over(sock, argv):
            forward.sock = sock
            forward.tell()  # a signal that came during the handshake
            code = _exit_code(sock)
        elif not forward.got:
            forward.restore()
            return None  # gone before taking the request (idled out, stopped, refused): nothing ran
    except _Abandon:
        pass
    if forward.got in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(forward.got, signal.SIG_DFL)  # end as a local run ends on these: killed by it
        os.kill(os.getpid(), forward.got)
    if code is None and forward.got:
        return 130
    if code is None:
        from .errors import ExitCode

        os.write(2, f"digitize: the resident converter stopped unexpectedly (see {server.log})\n".encode())
        return int(ExitCode.internal)
    return code


def _handed_over(sock: socket.socket, argv: list[str]) -> bool:
    """Send the request with our stdio; whether a child took it (answered OK)."""
    try:
        request = _request(argv)  # os.getcwd() fails in a deleted folder: the local run says so
        sock.settimeout(HANDSHAKE_WAIT)
        sent = socket.send_fds(sock, [request], STDIO)
        sock.sendall(request[sent:])
        return resident.read_line(sock, HANDSHAKE_WAIT).startswith(b"OK ")
    except OSError:
        return False


def _exit_code(sock: socket.socket) -> int | None:
    """The child's exit code, or None if it ended without one."""
    data = b""
    sock.settimeout(None)
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(64)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    word, _, code = data.strip().partition(b" ")
    return int(code) if word == b"EXIT" and code.lstrip(b"-").isdigit() else None


# -- server ---------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} converter {os.getpid()}: {text}", file=sys.stderr, flush=True)


def serve(start_env: dict[str, str], socket_arg: str, idle: str, language: str) -> int:
    """The server process: lock, warm up, listen until idle or told QUIT; 3 if another one serves."""
    path = Path(socket_arg)
    lock = resident.hold_lock(resident.ResidentServer(path).lock)
    if lock is None:
        print(f"another converter serves {path}", flush=True)
        return 3
    # the lock is released when the server stops listening, or at the latest when it exits
    import importlib

    from . import cli, convert, ocr  # noqa: F401 - what every child would import
    from .errors import DigitizeError

    for name in LAZY_IMPORTS:
        importlib.import_module(name)
    try:
        ocr.warm(language)
    except DigitizeError as e:
        _say(f"models not loaded ({e}); children load their own")
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
    served = _Server(listener, path, float(idle), lock, added).run()
    _say(f"stopped after {served} runs")
    return 0


def _loaded_files() -> dict[str, tuple[int, int, int]]:
    """Every module and shared library this process loaded, with its inode, size and time."""
    paths = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
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
            _say(f"run {pid}: exit {os.waitstatus_to_exitcode(status)}, {usage.ru_utime:.2f} s user"
                 f" {usage.ru_stime:.2f} s sys (with its page workers), {time.monotonic() - start:.2f} s")
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
            conn.settimeout(5)
            if not _same_user(conn):
                return True
            command, body = _read_request(conn, fds)
            if command in (b"STATUS", b"QUIT"):
                now = time.monotonic()
                conn.sendall(resident.status_line(os.getpid(), now - self.started,
                                                  0.0 if self.children else now - self.last, NOUN,
                                                  self.served, len(self.children)).encode() + b"\n")
                self.stopping = self.stopping or command == b"QUIT"
            elif command == b"RUN" and len(fds) == len(STDIO) and not self._stale():
                conn.settimeout(None)  # blocking again: parent and child share this descriptor's flags
                self._fork(conn, fds, _parse(body))
                conn = None  # kept until the child is reaped
        except (OSError, ValueError, IndexError) as e:
            _say(f"request refused: {type(e).__name__}: {e}")
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
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                code = self._child(conn, fds, request)
            except BaseException:  # noqa: BLE001 - never back into the server's loop
                pass
            finally:
                os._exit(code)
        self.served += 1
        self.children[pid] = (conn, time.monotonic())
        self.watched[conn] = pid

    def _child(self, conn: socket.socket, fds: list[int], request: dict) -> int:
        """Become the client's process, answer OK, run the CLI exactly as a local run does, answer EXIT."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for other in [*self.watched, *(c for c, _ in self.children.values())]:
            other.close()
        if self.listener is not None:
            self.listener.close()
        for fd in (self.wake_r, self.wake_w, self.lock):
            if fd >= 0:
                os.close(fd)
        _become(fds, request, self.added_env)
        conn.sendall(b"OK %d\n" % os.getpid())  # fails if the client gave up meanwhile: nothing ran
        code = _run_cli(request["argv"])
        try:
            conn.sendall(b"EXIT %d\n" % code)
        except OSError:
            pass
        return code


def _same_user(conn: socket.socket) -> bool:
    """Only our own user may have us run commands (the folder is 0700 already; this is the belt)."""
    import struct

    if not hasattr(socket, "SO_PEERCRED"):
        return True
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid == os.getuid()


def _read_request(conn: socket.socket, fds: list[int]) -> tuple[bytes, bytes]:
    """The command word and, for RUN, its body; descriptors that came with it are added to FDS."""
    data = b""
    while b"\n" not in data:
        chunk, got, _, _ = socket.recv_fds(conn, 65536, 3)
        fds.extend(got)
        if not chunk:
            raise ValueError("connection closed before a request")
        data += chunk
    line, _, body = data.partition(b"\n")
    command, _, size = line.strip().partition(b" ")
    if command != b"RUN":
        return command, b""
    size = int(size)
    while len(body) < size:
        chunk, got, _, _ = socket.recv_fds(conn, max(65536, size - len(body)), 3)
        fds.extend(got)
        if not chunk:
            raise ValueError("connection closed in a request")
        body += chunk
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


def _run_cli(argv: list[str]) -> int:
    """The local run's entry, then what the interpreter does at exit (threads, atexit, flush)."""
    import atexit
    import threading

    from .cli import main

    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:  # before main() could catch it
        code = 130
    except BaseException:  # noqa: BLE001 - main() already makes every error one line
        code = 15
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
