"""Thin wrappers around poppler's pdftoppm and pdftotext, with time limits and no secret in their environment."""

from __future__ import annotations

import io
import math
import os
import re
import resource
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

from .errors import InputError, MissingDependencyError
from .records import Word
from .secrets import tool_environment
from .terminal import plain

TIMEOUT = 300


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise MissingDependencyError(f"{tool} not found: install poppler-utils (scripts/setup.sh)")
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess:
    """Run a poppler tool on an untrusted file: no secret in its environment, TIMEOUT seconds of
    wall time (raises TimeoutExpired) and as many of CPU time, a limit of the tool's own. The
    wall-clock limit lives in this process; the CPU limit still stops the tool if this process
    is killed first (a page worker past its deadline) and it is left running as an orphan. The
    limit is set by a shell that then becomes the tool (exec): no window before it applies, and
    no preexec_fn, which is unsafe in a threaded caller (the web server renders thumbnails)."""
    limited = ["/bin/sh", "-c", 'ulimit -S -t "$0" && exec "$@"', str(_cpu_limit()), *args]
    return subprocess.run(limited, capture_output=True, timeout=TIMEOUT, env=tool_environment())


def _cpu_limit() -> int:
    """The tool's soft CPU limit: TIMEOUT seconds, or less where a hard limit already set (a unit's
    `LimitCPU=`, a clerk's `ulimit -t`, which the resident converter copies) is lower: raising a
    limit above the hard one is refused, and the tool would then never run (review2 r2input M1)."""
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    wanted = math.ceil(TIMEOUT)
    return wanted if hard == resource.RLIM_INFINITY else max(1, min(wanted, hard))


def render_page(pdf: Path, page_index: int, dpi: float, grey: bool = False) -> Image.Image:
    """Render one page (CropBox, /Rotate applied) to a PIL image.

    pdftoppm is run here, not through pdf2image: that library gives its pdfinfo and pdftoppm the
    whole environment (AWS_*, PGPASSWORD) and takes no other, and it asks pdfinfo for the page
    count first, a process per page that one page does not need."""
    exe = _require("pdftoppm")
    n = str(page_index + 1)
    args = [exe, "-r", str(round(dpi)), "-cropbox", "-f", n, "-l", n, *(["-gray"] if grey else []), str(pdf)]
    try:
        proc = _run(args)
    except subprocess.TimeoutExpired:
        raise InputError(f"page {page_index + 1} took more than {TIMEOUT} s to render") from None
    if proc.returncode != 0 or not proc.stdout:
        why = " ".join("".join(c if c.isprintable() else " " for c in proc.stderr.decode("utf-8", "replace")).split())[:200]
        raise InputError(f"page {page_index + 1} cannot be rendered" + (f": {why}" if why else ""))
    try:
        image = Image.open(io.BytesIO(proc.stdout))
        image.load()
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"page {page_index + 1} cannot be rendered: {e}") from None
    return image


def page_words(pdf: Path, page_index: int, dpi: float) -> list[tuple[int, Word]] | None:
    """Words of a born-digital page with line ids, in pixel coordinates at ``dpi``; None when its
    text cannot be extracted (pdftotext fails or times out, or its output is not XML), so the page is OCRed
    rather than stored with an empty text layer called born-digital."""
    exe = _require("pdftotext")
    n = str(page_index + 1)
    try:
        proc = _run([exe, "-bbox-layout", "-enc", "UTF-8", "-f", n, "-l", n, str(pdf), "-"])
    except subprocess.TimeoutExpired:  # nested forms of text: the page is OCRed, not an internal error
        return None
    if proc.returncode != 0:
        return None
    return parse_bbox_layout(proc.stdout, dpi / 72.0)


# characters XML 1.0 forbids, which pdftotext writes as a font's ToUnicode maps them (a broken
# subset font maps a glyph to U+0001): the C0 controls but tab and line ends, U+FFFE and U+FFFF
XML_INVALID = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|\xef\xbf[\xbe\xbf]")


def parse_bbox_layout(xhtml: bytes, scale: float) -> list[tuple[int, Word]] | None:
    """pdftotext's ``-bbox-layout`` XHTML as words (None if it does not parse): characters XML
    forbids are dropped first, and each word is kept as plain text (no control or bidi character)."""
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    try:
        root = ET.fromstring(XML_INVALID.sub(b"", xhtml))
    except ET.ParseError:
        return None
    out: list[tuple[int, Word]] = []
    for line_id, line in enumerate(root.iterfind(".//h:line", ns)):
        for w in line.iterfind("h:word", ns):
            text = plain(w.text)
            if not text:
                continue
            box = [float(w.get(k, 0)) * scale for k in ("xMin", "yMin", "xMax", "yMax")]
            out.append((line_id, Word(text, round(box[0]), round(box[1]), round(box[2]), round(box[3]), 100.0)))
    return out


def version() -> str:
    """pdftoppm's version line, asked once per installed binary: every report carries it, and
    a process per run costs more than the rest of a small conversion's bookkeeping."""
    try:
        path = _require("pdftoppm")
        key = (path, os.stat(path).st_mtime_ns)  # an upgrade replaces the file
    except (MissingDependencyError, OSError):
        return ""
    if key not in _versions:
        try:
            proc = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=30, env=tool_environment())
        except (OSError, subprocess.SubprocessError):
            return ""
        first = (proc.stderr or proc.stdout).splitlines()
        _versions[key] = first[0].strip() if first else ""
    return _versions[key]


_versions: dict[tuple[str, int], str] = {}
