"""Thin wrapper around veraPDF, the reference PDF/A validator: our outputs are judged by it.

Found as ``$DIGITIZE_VERAPDF`` (a command), ``verapdf`` on PATH, or the Maven Central
classpath that ``scripts/setup.sh`` caches (``~/.cache/digitize/verapdf.classpath``), run with
main class ``org.verapdf.apps.GreenfieldCliWrapper``. Several files go in one JVM start.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import MissingDependencyError, OutputValidationError

MAIN_CLASS = "org.verapdf.apps.GreenfieldCliWrapper"


def _classpath_file() -> Path:
    cache = os.environ.get("DIGITIZE_CACHE") or str(Path.home() / ".cache" / "digitize")
    return Path(cache) / "verapdf.classpath"


@functools.lru_cache(maxsize=1)
def command() -> list[str] | None:
    if os.environ.get("DIGITIZE_VERAPDF"):
        return shlex.split(os.environ["DIGITIZE_VERAPDF"])
    if shutil.which("verapdf"):
        return ["verapdf"]
    cp = _classpath_file()
    java = shutil.which("java")
    if java and cp.is_file() and cp.stat().st_size:
        return [java, "-Xss4m", "-XX:+UseSerialGC", "-cp", cp.read_text().strip(), MAIN_CLASS]
    return None


def available() -> bool:
    return command() is not None


@dataclass
class Validation:
    path: str
    compliant: bool
    failures: list[str] = field(default_factory=list)  # "6.2.11.4.1: description (n checks)"


@functools.lru_cache(maxsize=1)
def version() -> str:
    cmd = command()
    if not cmd:
        return ""
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=120).stdout
    return out.splitlines()[0].strip() if out else ""


def validate(paths: Sequence[os.PathLike | str], flavour: str = "2b", timeout: float = 600) -> list[Validation]:
    cmd = command()
    if cmd is None:
        raise MissingDependencyError("veraPDF not found: run scripts/setup.sh or set DIGITIZE_VERAPDF")
    proc = subprocess.run([*cmd, "--nonpdfext", "--flavour", flavour, "--format", "xml", *map(str, paths)],
                          capture_output=True, timeout=timeout)
    if not proc.stdout.strip():
        raise OutputValidationError(f"veraPDF gave no report: {proc.stderr.decode(errors='replace')[-300:]}")
    return parse_report(proc.stdout)


def parse_report(xml: bytes) -> list[Validation]:
    root = ET.fromstring(xml)
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
