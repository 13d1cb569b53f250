"""Thin wrapper around veraPDF, the reference PDF/A validator: our outputs are judged by it.

Found as ``$DIGITIZE_VERAPDF`` (a command), ``verapdf`` on PATH, or the Maven Central
classpath that ``scripts/setup.sh`` caches (``~/.cache/digitize/verapdf.classpath``), else the
system-wide copy setup.sh installs for every user (service accounts too:
``/usr/local/lib/digitize/verapdf.classpath``, root's and read-only to others), run with main class
``org.verapdf.apps.GreenfieldCliWrapper``. Several files go in one JVM start. Validation that is
asked for but cannot run is an error (exit 3), never a silent skip.

When setup.sh has also built ``scripts/verapdf/DigitizeValidator.java`` into a jar, validation goes
to a resident server: one JVM per user, machine and veraPDF build, listening on a unix socket in a
private folder, started detached by the first run that needs it and idling out after
``validator.idle`` seconds (like the Gradle daemon; the shared machinery is in resident.py). JVM
start-up (~1 CPU-s) is most of the cost of validating a one-page scan; a connection costs
milliseconds. If no server can be used, one JVM per process validates path after path
(:class:`StreamingValidator`), and failing that the CLI.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import select
import shlex
import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import click

from . import resident
from .config import Settings, ValidatorSettings, load_settings
from .errors import MissingDependencyError, OutputValidationError
from .secrets import tool_environment

log = logging.getLogger("digitize")

MAIN_CLASS = "org.verapdf.apps.GreenfieldCliWrapper"


def _system_dir() -> Path:
    return Path(resident.system_folder())


def _trusted_install(folder: Path) -> bool:
    """Whether a copy (this user's cache or the system-wide one) can be run: its classpath file,
    every jar on it and the validator jar, with every folder above them, are root's or ours and
    writable by no one else (another user's jar on our classpath would run as us, as root under sudo)."""
    listing = folder / "verapdf.classpath"
    passed: set[str] = set()  # folders above that passed: checked once, not once per jar
    if not resident.trusted_path(listing, passed=passed):
        return False
    try:
        jars = [j for j in listing.read_text().strip().split(os.pathsep) if j]
    except (OSError, UnicodeDecodeError):
        return False
    stream_jar = folder / "digitize-validator.jar"
    if os.path.lexists(stream_jar):
        jars.append(str(stream_jar))
    return bool(jars) and all(resident.trusted_path(jar, passed=passed) for jar in jars)


def _home() -> Path:
    """Where the classpath and the validator jar are: this user's cache, else the system-wide copy
    (each only if :func:`_trusted_install`; else the cache, where :func:`_java_command` finds none)."""
    return _find_home()[0]


def _find_home() -> tuple[Path, bool]:
    """(:func:`_home`, whether that copy passed :func:`_trusted_install`): each copy checked once."""
    cache = resident.cache_dir()
    if _trusted_install(cache):
        return cache, True
    if (cache / "verapdf.classpath").is_file():
        log.warning("not running veraPDF from %s: a file there or a folder above it belongs to another account"
                    " or is writable by others", cache)
    system = _system_dir()
    return (system, True) if _trusted_install(system) else (cache, False)


def _classpath_file() -> Path:
    return _home() / "verapdf.classpath"


# A short-lived JVM: the C1 compiler only and a class-data-sharing archive halve start-up
# (measured 1.54 s -> 0.81 s for one file), which dominates validating a one-page scan.
# -Xlog:disable: JVM warnings (e.g. a stale class archive) go to stdout, where our answers are.
JVM_FLAGS = ["-Xss4m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xlog:disable"]


def _stamp(words: Sequence[str], classpath: str) -> str:
    """Short hash of a command and its jars' sizes and times: a rebuilt jar changes it."""
    return resident.stamp(words, classpath.split(os.pathsep))


def _cds_archive(classpath: str) -> Path:
    """Class archive named after the classpath *and* its jars' sizes and times: a rebuilt jar gets a new one."""
    return resident.cache_dir() / f"verapdf-{_stamp([classpath], classpath)}.jsa"


def _archive_flags(archive: Path | None, tag: str) -> tuple[list[str], Path | None]:
    """JVM flags starting from the class archive, or else dumping one at exit (to the returned temp name)."""
    if archive is None:
        return [], None
    if _usable_archive(archive):
        return [f"-XX:SharedArchiveFile={archive}"], None
    if os.path.lexists(archive):  # someone else's or writable by others: neither mapped nor replaced
        return [], None
    _prune_archives(archive)
    dump = archive.with_suffix(f".{tag}.tmp")
    return [f"-XX:ArchiveClassesAtExit={dump}"], dump


def _usable_archive(archive: Path) -> bool:
    """A class archive is code the JVM maps: used only if no other account could have written it."""
    return archive.is_file() and resident.trusted_path(archive)


ARCHIVE_UNUSED_DAYS = 7  # another build's archive (~14 MB) unread this long is gone with it
DUMP_STALE_DAYS = 1  # a dump's temp file this old belongs to a JVM that was killed


def _prune_archives(current: Path) -> None:
    """A new archive is about to be dumped (a rebuilt or another veraPDF): drop archives no JVM
    has mapped for ARCHIVE_UNUSED_DAYS (the access time says: a JVM reads it at every start,
    and relatime still moves it daily) and dumps left by killed JVMs. A JVM that maps one
    keeps reading it after the unlink."""
    now = time.time()
    for path in [*current.parent.glob("verapdf-*.jsa"), *current.parent.glob("verapdf-*.tmp")]:
        try:
            info = path.stat()
        except OSError:
            continue
        if path == current:
            continue
        old = (now - info.st_mtime > DUMP_STALE_DAYS * 86400) if path.suffix == ".tmp" else \
            (now - max(info.st_atime, info.st_mtime) > ARCHIVE_UNUSED_DAYS * 86400)
        if old:
            try:
                path.unlink()
            except OSError:
                pass


def _java_command() -> tuple[list[str], Path | None] | None:
    found = _java_install()
    return None if found is None else found[:2]


@functools.lru_cache(maxsize=1)
def _java_install() -> tuple[list[str], Path | None, Path] | None:
    """(command, class archive, the install's folder), the install checked once per process (its
    ~20 jars and every folder above them: ~5 ms each time, and a run asked four times)."""
    home, trusted = _find_home()
    cp = home / "verapdf.classpath"
    java = shutil.which("java")
    if not (java and trusted and cp.is_file() and cp.stat().st_size):
        return None
    classpath = cp.read_text().strip()
    return [java, *JVM_FLAGS, "-cp", classpath, MAIN_CLASS], _cds_archive(classpath), home


def command() -> list[str] | None:
    if os.environ.get("DIGITIZE_VERAPDF"):
        return shlex.split(os.environ["DIGITIZE_VERAPDF"])
    if shutil.which("verapdf"):
        return ["verapdf"]
    found = _java_command()
    if found is None:
        return None
    cmd, archive = found
    if archive is not None and _usable_archive(archive):
        return [cmd[0], f"-XX:SharedArchiveFile={archive}", *cmd[1:]]
    return cmd


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return _run_jvm(args, timeout)
    except subprocess.TimeoutExpired:
        raise OutputValidationError(f"veraPDF did not finish within {timeout:g} s") from None
    except OSError as e:
        raise MissingDependencyError(f"cannot run veraPDF: {e.strerror or e}") from None


def _run_jvm(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run veraPDF; the first JVM run also dumps the class archive (temp name, then rename)."""
    cmd = command()
    if cmd is None:
        raise MissingDependencyError(MISSING)
    found = _java_command() if cmd[0] != "verapdf" and not os.environ.get("DIGITIZE_VERAPDF") else None
    archive = found[1] if found else None
    if archive is None or os.path.lexists(archive):
        return subprocess.run([*cmd, *args], capture_output=True, timeout=timeout, env=tool_environment())
    share, tmp = _archive_flags(archive, str(os.getpid()))
    proc = subprocess.run([cmd[0], *share, *cmd[1:], *args], capture_output=True, timeout=timeout,
                          env=tool_environment())
    if tmp.is_file():
        os.replace(tmp, archive)
    return proc


def available() -> bool:
    return command() is not None


MISSING = ("veraPDF not found: run scripts/setup.sh (it installs veraPDF for every user), set DIGITIZE_VERAPDF,"
           " or turn validation off (--no-validate, [convert] validate = false)")


def require(validate: bool = True) -> None:
    """For a command about to convert: veraPDF must be there if outputs are to be validated (exit 3)."""
    if validate and not available():
        raise MissingDependencyError(MISSING)


@dataclass
class Validation:
    path: str
    compliant: bool
    failures: list[str] = field(default_factory=list)  # "6.2.11.4.1: description (n checks)"


@functools.lru_cache(maxsize=1)
def version() -> str:
    """veraPDF version; read from the cached classpath's jar name to spare a JVM start."""
    found = _java_command()
    if found is not None and not os.environ.get("DIGITIZE_VERAPDF"):
        jar = re.search(r"greenfield-apps-([\d.]+)\.jar", " ".join(found[0]))
        if jar:
            return f"veraPDF {jar.group(1)}"
    cmd = command()
    if not cmd:
        return ""
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=120, env=tool_environment()).stdout
    return out.splitlines()[0].strip() if out else ""


STREAM_CLASS = "DigitizeValidator"


def _stream_jar() -> Path:
    """In the install :func:`_java_install` found and checked (the validator jar with it)."""
    found = _java_install()
    return (found[2] if found is not None else _home()) / "digitize-validator.jar"


def _stream_command(flavour: str) -> tuple[list[str], Path] | None:
    """The streaming validator's command and its class archive, if setup.sh compiled it."""
    if os.environ.get("DIGITIZE_VERAPDF"):
        return None
    jar = _stream_jar()
    if not jar.is_file() or command() is None:
        return None
    found = _java_command()
    if found is None:
        return None
    cmd = found[0]
    classpath = cmd[cmd.index("-cp") + 1] + os.pathsep + str(jar)
    return [cmd[0], *JVM_FLAGS, "-cp", classpath, STREAM_CLASS, flavour], _cds_archive(classpath)


class _ValidatorGone(OutputValidationError):
    """The validator JVM ended (or its socket broke) before answering: a fresh one may succeed."""


class _ValidatorBusy(_ValidatorGone):
    """The resident server serves as many connections as it takes (DigitizeValidator.MAX_CONNECTIONS)."""

    def __init__(self, message: str = "the resident veraPDF validator serves as many runs as it takes"):
        super().__init__(message)


class _LineValidator:
    """A validator JVM answering one line per line sent: a PDF path, or STATUS / QUIT to a server."""

    _buffer = b""

    def _fd(self) -> int:
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd()], [], [], left)[0]:
                raise OutputValidationError(f"veraPDF did not answer within {timeout:g} s")
            try:
                chunk = os.read(self._fd(), 65536)
            except ConnectionError:
                chunk = b""
            if not chunk:
                raise _ValidatorGone("veraPDF stopped unexpectedly")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace").rstrip("\r")

    def ask(self, line: bytes, timeout: float) -> str:
        try:
            self._send(line + b"\n")
        except ConnectionError:  # a broken pipe or reset socket: the JVM is gone, or a full server
            # said BUSY and closed before our line got in; its last words are in our buffer already
            if self._last_words() == "BUSY":
                raise _ValidatorBusy() from None
            raise _ValidatorGone("veraPDF stopped unexpectedly") from None
        return self._readline(timeout)

    def _last_words(self) -> str | None:
        """The line the other end wrote before it closed (no waiting: a closed peer's data is all here)."""
        try:
            return self._readline(0.1)
        except OutputValidationError:
            return None

    def validate(self, path: os.PathLike | str, timeout: float) -> Validation:
        return parse_stream_answer(str(path), self.ask(os.fsencode(os.path.abspath(path)), timeout))


class StreamingValidator(_LineValidator):
    """One veraPDF JVM answering one line per PDF path written to its stdin.

    The first one on a machine also dumps a class-data archive at exit (temp name, renamed on
    close) that later ones start from.
    """

    def __init__(self, command: list[str], archive: Path | None = None):
        self.archive = archive
        share, self._dump = _archive_flags(archive, str(os.getpid()))
        self.command = [command[0], *share, *command[1:]]
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, bufsize=0, env=tool_environment())
        self._ready = False

    def _fd(self) -> int:
        return self.proc.stdout.fileno()

    def _send(self, data: bytes) -> None:
        self.proc.stdin.write(data)

    def validate(self, path: os.PathLike | str, timeout: float) -> Validation:
        deadline = time.monotonic() + timeout
        while not self._ready:  # anything before READY is start-up noise
            self._ready = self._readline(max(deadline - time.monotonic(), 0.001)) == "READY"
        return super().validate(path, timeout)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self._dump is not None and self._dump.is_file() and self.archive is not None:
            os.replace(self._dump, self.archive)


def parse_stream_answer(path: str, line: str) -> Validation:
    status, *rest = line.split("\t")
    if status == "PASS":
        return Validation(path, True)
    if status == "FAIL":
        return Validation(path, False, rest)
    return Validation(path, False, rest or [f"veraPDF gave no verdict: {line[:200]}"])


# The resident validator: one server JVM per user, machine, veraPDF build and flavour (resident.py). -----

START_WAIT = 30.0  # seconds a run waits for a starting server before validating with a JVM of its own


def _validator_settings() -> ValidatorSettings:
    """The settings the CLI loaded when under it (so --config counts), else defaults < file < environment."""
    ctx = click.get_current_context(silent=True)
    settings = ctx.find_root().obj if ctx is not None else None
    return (settings if isinstance(settings, Settings) else load_settings()).validator


def socket_dir(settings: ValidatorSettings | None = None) -> Path:
    return resident.socket_dir((settings or _validator_settings()).dir)


class ValidatorServer(resident.ResidentServer):
    """The resident validator of one veraPDF build and flavour; it dumps a class archive at exit."""

    def __init__(self, socket: Path, command: tuple[str, ...] = (), archive: Path | None = None):
        super().__init__(socket, command)
        self.archive = archive

    def launch(self) -> int:
        share, dump = _archive_flags(self.archive, f"server-{os.getpid()}")
        command = list(self.command)
        command[command.index("--serve") + 1] = self.argument()  # the folder's descriptor of this process
        return resident.launch([command[0], *share, *command[1:]], self.log, dump, self.archive)


def _resident_server(flavour: str, settings: ValidatorSettings | None = None) -> ValidatorServer | None:
    """None when the resident validator is off, not built, or has no usable socket folder."""
    settings = settings or _validator_settings()
    found = _stream_command(flavour) if settings.resident and hasattr(socket, "AF_UNIX") else None
    if found is None:
        return None
    cmd, archive = found
    # named after what would run (java, flags, classpath, jars' sizes and times, flavour): a rebuilt
    # jar or another veraPDF gets a server of its own, and the old one idles out; and after the
    # namespaces and cgroup it would run in (a sandboxed run's paths are not an outside JVM's)
    path = resident.socket_path(socket_dir(settings), "validator",
                                _stamp([*cmd, *resident.confinement()], cmd[cmd.index('-cp') + 1]))
    if path is None:
        return None
    serve = [*cmd[:-1], "--serve", resident.anchored(path), "--idle-seconds", f"{settings.idle:g}", cmd[-1]]
    return ValidatorServer(path, tuple(serve), archive)


class _ResidentClient(_LineValidator):
    """A connection to a resident server; one per process (a forked child opens its own)."""

    def __init__(self, sock: socket.socket, server: ValidatorServer):
        self.sock, self.server, self.pid = sock, server, os.getpid()
        self.server_pid = (resident.peer(sock) or (None, 0))[0]

    def validate(self, path: os.PathLike | str, timeout: float) -> Validation:
        answer = self.ask(os.fsencode(os.path.abspath(path)), timeout)
        if answer == "BUSY":  # sent instead of an answer, then closed
            raise _ValidatorBusy()
        return parse_stream_answer(str(path), answer)

    def retire_server(self) -> None:
        """Ask the server this client talks to (not a newer one on the same path) to stop."""
        if self.server_pid is not None and resident.lock_holder(self.server.lock) == self.server_pid:
            resident.ask(self.server.socket, "QUIT")

    def _fd(self) -> int:
        return self.sock.fileno()

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


_shared: dict[str, StreamingValidator] = {}
_clients: dict[Path, _ResidentClient] = {}
_shared_lock = threading.Lock()


def _resident(flavour: str, wait: float, server: ValidatorServer | None = None) -> _ResidentClient | None:
    """This process's connection to the resident validator (SERVER if the caller found it already),
    launching it if needed; None if unusable."""
    server = server or _resident_server(flavour)
    if server is None:
        return None
    with _shared_lock:
        client = _clients.get(server.socket)
        if client is not None and client.pid == os.getpid():
            return client
        try:
            sock = resident.reach(server, wait)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            log.info("cannot launch the resident veraPDF validator: %s", e)
            return None
        if sock is None:
            return None
        client = _clients[server.socket] = _ResidentClient(sock, server)
        return client


def _forget(client: _ResidentClient) -> None:
    with _shared_lock:
        if _clients.get(client.server.socket) is client:
            del _clients[client.server.socket]
    client.close()


def _validate_resident(paths: list, flavour: str, timeout: float) -> list[Validation] | None:
    """Verdicts from the resident server; None if none can be reached (the caller validates itself).

    A server gone mid-request (stopped, crashed, idled out as we connected) is replaced once.
    """
    results: list[Validation] = []
    for attempt in range(2):
        client = _resident(flavour, min(START_WAIT, timeout))
        if client is None and attempt == 0:
            log.info("no resident veraPDF validator: this process starts its own")
            return None
        if client is None:
            break
        try:
            for path in paths[len(results):]:
                results.append(client.validate(path, timeout))
            return results
        except _ValidatorBusy:
            _forget(client)
            log.info("the resident veraPDF validator is full: this process starts its own")
            return None
        except OutputValidationError as e:
            _forget(client)  # after a timeout its answers would be out of step
            if not isinstance(e, _ValidatorGone):
                # a check that never ends (a file veraPDF loops on) holds one of the server's
                # slots for good: it stops taking files and exits once its other clients are
                # answered (2 min at most); the next file gets a fresh server
                client.retire_server()
                raise
    server = _resident_server(flavour)
    raise OutputValidationError(f"the resident veraPDF validator stopped while checking {paths[len(results)]}"
                                f" and could not be replaced (see {server.log if server else 'its log'})")


def _shared_validator(flavour: str) -> StreamingValidator | None:
    """This process's validator JVM; None when a command is imposed or veraPDF is missing."""
    with _shared_lock:
        current = _shared.get(flavour)
        if current is not None and current.alive:
            return current
        found = _stream_command(flavour)
        if found is None:
            return None
        _shared[flavour] = StreamingValidator(*found)
        return _shared[flavour]


def prestart(flavour: str = "2b") -> None:
    """Get a validator warm while the pages are processed; returns at once.

    Connects to the resident server or launches it in the background; else boots this process's JVM.
    """
    try:
        server = _resident_server(flavour)
        if server is not None:
            _resident(flavour, wait=0, server=server)
        else:
            _shared_validator(flavour)
    except OSError:
        pass


def boot(settings: ValidatorSettings, flavour: str = "2b") -> None:
    """Launch the resident validator if none serves or starts, and return at once (no connection).

    For a run that is about to launch the resident converter: the JVM then starts while the
    converter loads, on a core that would otherwise wait, rather than later beside the pages."""
    try:
        server = _resident_server(flavour, settings)
        sock = resident.reach(server, 0) if server is not None else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return
    if sock is not None:
        sock.close()


@atexit.register
def _close_shared() -> None:
    for validator in _shared.values():
        validator.close()
    _shared.clear()
    for client in _clients.values():
        client.close()
    _clients.clear()


def validate(paths: Sequence[os.PathLike | str], flavour: str = "2b", timeout: float = 600) -> list[Validation]:
    paths = list(paths)
    answers = _validate_resident(paths, flavour, timeout)
    if answers is not None:
        return answers
    try:
        streaming = _shared_validator(flavour)
    except OSError:
        streaming = None
    if streaming is not None:
        try:
            return [streaming.validate(p, timeout) for p in paths]
        except OutputValidationError:
            streaming.close()  # fall back to one CLI run below
    proc = _run(["--nonpdfext", "--flavour", flavour, "--format", "xml", *map(str, paths)], timeout)
    if not proc.stdout.strip():
        raise OutputValidationError(f"veraPDF gave no report: {proc.stderr.decode(errors='replace')[-300:]}")
    return parse_report(proc.stdout)


def parse_report(xml: bytes) -> list[Validation]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise OutputValidationError(f"veraPDF report unreadable ({e})") from None
    results = []
    for job in root.iter("job"):
        item = job.find("item")
        name = item.findtext("name", "") if item is not None else ""
        report = job.find("validationReport")
        if report is None:
            reason = job.findtext(".//taskException/exceptionMessage") or "veraPDF could not parse the file"
            results.append(Validation(name, False, [reason.strip()]))
            continue
        failures = [
            f"{rule.get('clause')}-{rule.get('testNumber')}: {(rule.findtext('description') or '').strip()}"
            f" ({rule.get('failedChecks')} checks)"
            for rule in report.iter("rule") if rule.get("status") == "failed"
        ]
        results.append(Validation(name, report.get("isCompliant") == "true", failures))
    return results


def require_valid(path: os.PathLike | str) -> Validation:
    (result,) = validate([path])
    if not result.compliant:
        raise OutputValidationError(f"output is not valid PDF/A-2b: {'; '.join(result.failures[:3])}")
    return result
