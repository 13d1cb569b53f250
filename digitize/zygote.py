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
nice value, groups, and resident.confinement(): namespaces, cgroup, seccomp, capabilities).

A run first tries the converter where the settings usually put it, before reading any setting
(_to_serving); the child reads them as the run would and declines (no ``OK``) when they are not
this converter's (zygote_server._serves).

Protocol, one request per connection. Client: ``RUN <n>\\n`` and n bytes of NUL-separated
fields, with its descriptors 0, 1, 2 attached. Child: ``OK <pid>\\n`` once it has taken them (the
client runs locally if this never comes), ``EXIT <code>\\n`` at the end. The client sends
``INT\\n`` or ``TERM\\n`` when it is interrupted; the server turns that, or the client vanishing,
into SIGINT for the child, which then stops and cleans up as a local Ctrl-C does.
``STATUS``/``QUIT`` are answered as by every resident server. The server is zygote_server.py; this
module is the client side, light enough for the ``digitize`` command to load before anything heavy.
"""

from __future__ import annotations

import _signal  # signal.py's base: signal.py (its enums) is ~2 ms of every run's client
import os
import sys
import time

from . import __version__, resident

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (see resident.py)
if TYPE_CHECKING:
    from pathlib import Path

# digitize/, pipelines/ and storage/ are imported from here (a str: pathlib, with re and urllib.parse, is ~8 ms
# of a client's start that nothing here needs)
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PACKAGES = ("digitize", "pipelines", "storage")  # what `digitize.cli` imports of this project
HANDSHAKE_WAIT = 20.0  # seconds for a child to take the request before the client runs it itself
START_WAIT = 5.0  # seconds for a just-launched converter to serve (~0.5 s idle) before running here
START_CPU = 10.0  # ...or longer, while it has used less CPU than this starting (~1-2 CPU-s)...
START_CAP = 60.0  # ...but never longer than this in all
TERM_WAIT = 5.0  # seconds a terminated client lets its child clean up
LIMITS = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_CORE", "RLIMIT_NOFILE", "RLIMIT_AS")
STDIO = [0, 1, 2]

# Environment variables read while the interpreter starts or libraries load (libgomp, OpenBLAS,
# OpenCV, NumPy, Tesseract's data, glibc's malloc), which a child could not apply any more.
LOAD_TIME_ENV = ("OMP_THREAD_LIMIT", "OPENBLAS_NUM_THREADS", "TESSDATA_PREFIX", "DIGITIZE_LIBTESSERACT",
                 "DIGITIZE_SYSTEM_DIR")  # the last: which Tesseract build (tesslib.built_library) loads
LOAD_TIME_PREFIXES = ("PYTHON", "OMP_", "GOMP_", "KMP_", "OPENBLAS", "GOTO", "MKL_", "NUMEXPR", "OPENCV_",
                      "NPY_", "NUMPY_", "LC_", "LANG", "LD_", "GLIBC_TUNABLES", "MALLOC_")


def _loads_at_start(name: str) -> bool:
    return name in LOAD_TIME_ENV or name.startswith(LOAD_TIME_PREFIXES)


def _module_files() -> list[str]:
    """This project's Python files: an edit or an upgrade must not be served by old code."""
    found = []
    folders = [os.path.join(ROOT, p) for p in PACKAGES]
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(".py"):
                found.append(entry.path)
            elif entry.is_dir() and entry.name != "__pycache__":
                folders.append(entry.path)
    return sorted(found)


def _key() -> str:
    import resource

    words = [__version__, str(ROOT), sys.prefix, os.path.realpath(sys.executable), sys.version, repr(sys.flags),
             repr(sys.warnoptions), repr(sys._xoptions), f"gid={os.getgid()}:{sorted(os.getgroups())}",
             f"nice={os.getpriority(os.PRIO_PROCESS, 0)}",
             *(f"{name}={resource.getrlimit(getattr(resource, name))[1]}" for name in LIMITS),
             *(f"{k}={v}" for k, v in sorted(os.environ.items()) if _loads_at_start(k)), *resident.confinement()]
    return resident.stamp(words, _module_files())


# -- client ---------------------------------------------------------------------------------


def _run_arguments(argv: list[str]) -> str | None | bool:
    """For ``digitize [global options] run ...``: the --config value (None if not given); False for
    anything else (other commands, --help, --version, a usage error), which runs locally."""
    if "-h" in argv or "--help" in argv or "--version" in argv:
        return False
    found = command_arguments(argv)
    return found[0] if found is not None and found[1] == "run" else False


def command_arguments(argv: list[str]) -> tuple[str | None, str, list[str]] | None:
    """``digitize [global options] COMMAND ARGS``: (the --config value or None, COMMAND, ARGS); None
    when there is no command or the global options are not ones this reads (the CLI reports them)."""
    config = None
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            config = next(args, None)
            if config is None:
                return None
        elif arg.startswith("--config="):
            config = arg.partition("=")[2]
        elif arg in ("--verbose", "--quiet") or (len(arg) > 1 and arg[0] == "-" and set(arg[1:]) <= {"v", "q"}):
            continue
        else:
            return config, arg, list(args)
    return None


class ConverterServer(resident.ResidentServer):
    """The resident converter of this interpreter, environment and code; its command is made at launch."""

    def __init__(self, socket: Path | str, idle: float = 600.0, language: str = "vie+eng"):
        super().__init__(socket)
        self.idle = idle
        self.language = language  # models it loads (the launching run's), shared by its children

    def launch(self) -> int:
        import subprocess  # for the interpreter's flags (-X, -W, -O ...), which the server gets too

        boot = ("import os, sys; env = dict(os.environ); sys.path.insert(0, sys.argv[1]); "
                "from digitize.zygote_server import serve; sys.exit(serve(env, *sys.argv[2:]))")
        return resident.launch([sys.executable, *subprocess._args_from_interpreter_flags(), "-c", boot, ROOT,
                                self.argument(), f"{self.idle:g}", self.language], self.log,
                               env=resident.server_environment())


def converter_server(settings) -> ConverterServer | None:
    """None when the resident converter is off or its socket folder is unusable."""
    if not settings.converter.resident or not resident.can_pass_fds():
        return None
    path = resident.socket_path(resident.socket_dir(settings.validator.dir), "converter", _key())
    if path is None:
        return None
    return ConverterServer(path, idle=settings.converter.idle, language=settings.convert.language)


def handover(argv: list[str]) -> int | None:
    """Run ``digitize ARGV`` in a child of the resident converter: its exit code, or None when this
    process must run it itself (not ``run``, converter off, or not up within START_WAIT s of its launch)."""
    config = _run_arguments(argv)
    if config is False:
        return None
    code = _to_serving(argv)
    if code is not None:
        return code
    try:
        from .config import load_settings

        settings = load_settings(config)
        server = converter_server(settings)
    except Exception:  # noqa: BLE001 - the local run reports a bad configuration properly
        return None
    if server is None or _needs_secret_from_environment(settings, argv):
        return None
    try:
        if settings.convert.validate and "--no-validate" not in argv and resident.lock_holder(server.lock) is None:
            _boot_validator(settings)
        # none serving: launch one and wait for it. Its start-up is the imports and model loading
        # this process would do itself, so waiting costs no time, and runs started together
        # (a batch of scans, the benchmark's two workers) pay them once instead of each.
        sock = _reach(server)
    except Exception as e:  # noqa: BLE001 - best effort: this run goes on here anyway
        _note(server, f"client {os.getpid()} could not launch a converter: {type(e).__name__}: {e}")
        return None
    if sock is None:
        return None  # not up within START_WAIT: run here
    with sock:
        return _delegate(sock, argv, server)


SETTINGLESS_FOLDER_ENV = "DIGITIZE_VALIDATOR_DIR"  # [validator] dir as the environment may set it


def _to_serving(argv: list[str]) -> int | None:
    """The run handed to a converter that serves already, before this process reads any setting
    (config and its dataclasses: ~25 ms of the client's ~70 ms per run); None when none takes it.

    The socket is looked for where the settings usually put it ($DIGITIZE_VALIDATOR_DIR or the
    default folder). The child that takes the run reads the settings itself, as the run does
    anyway, and declines before taking anything (no ``OK``) when they name another folder or no
    resident converter (zygote_server._serves); this client then goes the way of a local run's
    settings (handover). A PIN in the environment never leaves this process: such a run decides
    with its settings whether it signs. Nor does a run go this way when DIGITIZE_CONVERTER_RESIDENT
    is set (the switch that keeps runs away from a converter, a stuck one say), or when the cache
    folder would be ignored with a warning (the settings' way says it, once)."""
    if (os.environ.get("DIGITIZE_SIGN_PIN") or "DIGITIZE_CONVERTER_RESIDENT" in os.environ
            or not resident.can_pass_fds()):
        return None
    try:
        if not resident.cache_trusted():
            return None
        folder = resident.socket_folder(os.environ.get(SETTINGLESS_FOLDER_ENV, ""))
        if not os.path.isdir(folder):
            return None  # none serves there; only the settings' way makes a folder
        path = resident.socket_file(folder, "converter", _key())
        sock = resident.connect(path) if path is not None else None
    except Exception:  # noqa: BLE001 - the settings' way decides, and reports what is wrong
        return None
    if sock is None:
        return None
    with sock:
        return _delegate(sock, argv, ConverterServer(path))


def _reach(server: ConverterServer) -> resident.Connection | None:
    """A connection to the converter, launching it if none serves or starts. Past START_WAIT s, a
    converter still starting is waited for while it has used less than START_CPU CPU-s: on a loaded
    machine its start takes longer in wall time, not in CPU, and a run that gave up would pay the
    same imports again on the cores that are short already (a load of 20 on 2 cores: 20-40 s)."""
    start = time.monotonic()
    sock = resident.reach(server, START_WAIT)
    while sock is None and time.monotonic() - start < START_CAP and _still_starting(server):
        time.sleep(0.05)
        sock = resident.connect(server.socket)  # no launching here: reach() had its tries
    return sock


def _still_starting(server: ConverterServer) -> bool:
    """Whether a converter holds the lock (starting: it serves once warm) and has used little CPU;
    one that hangs or loops does not keep a run waiting past START_CAP."""
    pid = resident.lock_holder(server.lock)
    if pid == 0:
        return True  # locked, its pid not written yet: it has only just begun
    used = resident.cpu_seconds(pid) if pid else None
    return used is not None and used < START_CPU


def _boot_validator(settings) -> None:
    """No converter serves or starts: this run launches one, and will need the resident veraPDF
    validator a second later. Its JVM starts now, beside the converter's loading (one core each)."""
    from . import verapdf

    verapdf.boot(settings.validator)


def _note(server: resident.ResidentServer, line: str) -> None:
    try:
        fd = resident.open_file(server.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except OSError:
        return
    try:
        os.write(fd, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n".encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


def _needs_secret_from_environment(settings, argv: list[str]) -> bool:
    """A run that signs with the PIN in DIGITIZE_SIGN_PIN converts here: secrets never travel to a
    resident server (a PIN in the config file or a pin_file is read by the child itself)."""
    return (settings.sign.configured and "--no-sign" not in argv
            and bool(os.environ.get("DIGITIZE_SIGN_PIN")))


def _request(argv: list[str]) -> bytes:
    """The run as the child needs it: folder, umask, nice value, limits, argv and environment, less
    its secrets (a conversion needs no storage or index credentials; the config file, which the
    child reads itself, may still carry them)."""
    import resource

    from .secretnames import is_secret_env_name

    limits = ",".join(f"{name}:{resource.getrlimit(getattr(resource, name))[0]}" for name in LIMITS)
    fields = [os.fsencode(os.getcwd()), b"%d" % _umask(), b"%d" % os.getpriority(os.PRIO_PROCESS, 0),
              limits.encode(), os.fsencode(sys.argv[0] if sys.argv else "digitize"), b"%d" % len(argv),
              *map(os.fsencode, argv),
              *(k + b"=" + v for k, v in os.environb.items() if not is_secret_env_name(os.fsdecode(k)))]
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

    SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)

    def __init__(self):
        self.sock: resident.Connection | None = None
        self.got = 0
        self.before = {}
        for signum in self.SIGNALS:
            handler = _signal.getsignal(signum)
            if handler != _signal.SIG_IGN:  # e.g. a background job ignores SIGINT, as its local run would
                self.before[signum] = handler
                _signal.signal(signum, self)

    def __call__(self, signum, frame) -> None:
        if self.got:
            raise _Abandon
        self.got = signum
        if signum != _signal.SIGINT:
            _signal.signal(_signal.SIGALRM, _abandon)
            _signal.setitimer(_signal.ITIMER_REAL, TERM_WAIT)
        self.tell()

    def tell(self) -> None:
        if self.sock is not None and self.got:
            try:
                self.sock.sendall(b"INT\n" if self.got == _signal.SIGINT else b"TERM\n")
            except OSError:
                pass

    def restore(self) -> None:
        for signum, handler in self.before.items():
            _signal.signal(signum, handler)


def _delegate(sock: resident.Connection, argv: list[str], server: ConverterServer) -> int | None:
    try:
        for fd in STDIO:
            os.fstat(fd)
    except OSError:
        return None  # a closed one: run here, where Python handles it as usual
    forward = _Forward()
    code = None
    try:
        answers = _handed_over(sock, argv)
        if answers is not None:
            forward.sock = sock
            forward.tell()  # a signal that came during the handshake
            code = _exit_code(answers)
        elif not forward.got:
            forward.restore()
            return None  # gone before taking the request (idled out, stopped, refused): nothing ran
    except _Abandon:
        pass
    if forward.got in (_signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(forward.got, _signal.SIG_DFL)  # end as a local run ends on these: killed by it
        os.kill(os.getpid(), forward.got)
    if code is None and forward.got:
        return 130
    if code is None:
        from .errors import ExitCode

        os.write(2, f"digitize: the resident converter stopped unexpectedly (see {server.log})\n".encode())
        return int(ExitCode.internal)
    return code


def _handed_over(sock: resident.Connection, argv: list[str]) -> resident.Lines | None:
    """Send the request with our stdio; the child's answers once it took it (answered OK), else None."""
    try:
        request = _request(argv)  # os.getcwd() fails in a deleted folder: the local run says so
        sock.settimeout(HANDSHAKE_WAIT)
        sent = resident.send_fds(sock, [request], STDIO)
        sock.sendall(request[sent:])
        answers = resident.Lines(sock)
        took = answers.next(HANDSHAKE_WAIT)
    except OSError:
        return None
    return answers if took is not None and took.startswith(b"OK ") else None


def _exit_code(answers: resident.Lines) -> int | None:
    """The child's exit code, or None if it ended without one."""
    try:
        line = answers.next(None)
    except OSError:
        return None
    word, _, code = (line or b"").strip().partition(b" ")
    return int(code) if word == b"EXIT" and code.lstrip(b"-").isdigit() else None
