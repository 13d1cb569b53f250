"""Thin wrapper around veraPDF, the reference PDF/A validator: our outputs are judged by it.

Found as ``$DIGITIZE_VERAPDF`` (a command), ``verapdf`` on PATH, or the Maven Central
classpath that ``scripts/setup.sh`` caches (``~/.cache/digitize/verapdf.classpath``), run with
main class ``org.verapdf.apps.GreenfieldCliWrapper``. Several files go in one JVM start.

When setup.sh has also built ``scripts/verapdf/DigitizeValidator.java`` into a jar, one long-lived JVM
per process validates path after path (:class:`StreamingValidator`): a batch pays the JVM start
once, and ``convert_file`` boots it while the pages are processed.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import re
import select
import shlex
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import MissingDependencyError, OutputValidationError

MAIN_CLASS = "org.verapdf.apps.GreenfieldCliWrapper"


def _cache_dir() -> Path:
    return Path(os.environ.get("DIGITIZE_CACHE") or str(Path.home() / ".cache" / "digitize"))


def _classpath_file() -> Path:
    return _cache_dir() / "verapdf.classpath"


# A short-lived JVM: the C1 compiler only and a class-data-sharing archive halve start-up
# (measured 1.54 s -> 0.81 s for one file), which dominates validating a one-page scan.
# -Xlog:disable: JVM warnings (e.g. a stale class archive) go to stdout, where our answers are.
JVM_FLAGS = ["-Xss4m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xlog:disable"]


def _cds_archive(classpath: str) -> Path:
    """Class archive named after the classpath *and* its jars' sizes and times: a rebuilt jar gets a new one."""
    stamp = [classpath]
    for entry in classpath.split(os.pathsep):
        try:
            info = os.stat(entry)
            stamp.append(f"{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            stamp.append("-")
    return _cache_dir() / f"verapdf-{hashlib.sha256(' '.join(stamp).encode()).hexdigest()[:12]}.jsa"


@functools.lru_cache(maxsize=1)
def _java_command() -> tuple[list[str], Path | None] | None:
    cp = _classpath_file()
    java = shutil.which("java")
    if not (java and cp.is_file() and cp.stat().st_size):
        return None
    classpath = cp.read_text().strip()
    return [java, *JVM_FLAGS, "-cp", classpath, MAIN_CLASS], _cds_archive(classpath)


def command() -> list[str] | None:
    if os.environ.get("DIGITIZE_VERAPDF"):
        return shlex.split(os.environ["DIGITIZE_VERAPDF"])
    if shutil.which("verapdf"):
        return ["verapdf"]
    found = _java_command()
    if found is None:
        return None
    cmd, archive = found
    if archive is not None and archive.is_file():
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
        raise MissingDependencyError("veraPDF not found: run scripts/setup.sh or set DIGITIZE_VERAPDF")
    found = _java_command() if cmd[0] != "verapdf" and not os.environ.get("DIGITIZE_VERAPDF") else None
    archive = found[1] if found else None
    if archive is None or archive.is_file():
        return subprocess.run([*cmd, *args], capture_output=True, timeout=timeout)
    tmp = archive.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run([cmd[0], f"-XX:ArchiveClassesAtExit={tmp}", *cmd[1:], *args],
                          capture_output=True, timeout=timeout)
    if tmp.is_file():
        os.replace(tmp, archive)
    return proc


def available() -> bool:
    return command() is not None


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
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=120).stdout
    return out.splitlines()[0].strip() if out else ""


STREAM_CLASS = "DigitizeValidator"


def _stream_jar() -> Path:
    return _cache_dir() / "digitize-validator.jar"


def _stream_command(flavour: str) -> tuple[list[str], Path] | None:
    """The streaming validator's command and its class archive, if setup.sh compiled it."""
    if os.environ.get("DIGITIZE_VERAPDF") or not _stream_jar().is_file():
        return None
    found = _java_command()
    if found is None:
        return None
    cmd = found[0]
    classpath = cmd[cmd.index("-cp") + 1] + os.pathsep + str(_stream_jar())
    return [cmd[0], *JVM_FLAGS, "-cp", classpath, STREAM_CLASS, flavour], _cds_archive(classpath)


class StreamingValidator:
    """One veraPDF JVM answering one line per PDF path written to its stdin.

    The first one on a machine also dumps a class-data archive at exit (temp name, renamed on
    close) that later ones start from.
    """

    def __init__(self, command: list[str], archive: Path | None = None):
        self.archive = archive
        self._dump = archive.with_suffix(f".{os.getpid()}.tmp") if archive and not archive.is_file() else None
        share = ([f"-XX:SharedArchiveFile={archive}"] if archive and archive.is_file()
                 else [f"-XX:ArchiveClassesAtExit={self._dump}"] if self._dump else [])
        self.command = [command[0], *share, *command[1:]]
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, bufsize=0)
        self._buffer = b""
        self._ready = False

    def _readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise OutputValidationError(f"veraPDF did not answer within {timeout:g} s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise OutputValidationError("veraPDF stopped unexpectedly")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace").rstrip("\r")

    def validate(self, path: os.PathLike | str, timeout: float) -> Validation:
        deadline = time.monotonic() + timeout
        while not self._ready:  # anything before READY is start-up noise
            self._ready = self._readline(max(deadline - time.monotonic(), 0.001)) == "READY"
        self.proc.stdin.write(os.fsencode(os.path.abspath(path)) + b"\n")
        return parse_stream_answer(str(path), self._readline(timeout))

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


_shared: dict[str, StreamingValidator] = {}
_shared_lock = threading.Lock()


def _shared_validator(flavour: str) -> StreamingValidator | None:
    """This process's validator JVM; None when a command is imposed or veraPDF is missing."""
    if os.environ.get("DIGITIZE_VERAPDF") or command() is None:
        return None
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
    """Boot the validator JVM now (in the background) so it is warm when the output is ready."""
    try:
        _shared_validator(flavour)
    except OSError:
        pass


@atexit.register
def _close_shared() -> None:
    for validator in _shared.values():
        validator.close()
    _shared.clear()


def validate(paths: Sequence[os.PathLike | str], flavour: str = "2b", timeout: float = 600) -> list[Validation]:
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
