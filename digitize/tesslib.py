"""Thin ctypes wrapper over libtesseract's C API (capi.h): Tesseract kept loaded in the process.

Why not the `tesseract` command per page: every call writes the page image to disk, starts a
process and loads the language model again (~0.2 s of a ~1 s page). The C API takes the pixels
from memory and keeps the model between pages; it is the same Debian library the command uses,
so results are identical. Why not tesserocr: its wheels bundle another Tesseract build (and
leptonica/libtiff), building it needs a compiler and -dev packages, and we need six calls.

Tesseract checks a deadline while it recognises (the "monitor"), which gives a clean timeout;
a hang elsewhere is the caller's to stop (convert.py runs pages in killable worker processes).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import resident

os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # read by libgomp when the library loads

# Recognition settings, for the library and the command alike:
# - no second pass over inverted (white on black) lines: it re-reads every unsure line, and
#   dossiers have no such text;
# - no fixed-pitch analysis (a typewriter's cells, for the legacy engine's chopping): 2 % of the
#   CPU, the same text on the samples and on a monospaced page.
SETTINGS = {"tessedit_do_invert": "0", "textord_disable_pitch_test": "1"}

_LIBRARY_NAMES = ("libtesseract.so.5", "libtesseract.5.dylib", "libtesseract.so")
_LEPTONICA_NAMES = ("liblept.so.5", "libleptonica.so.6", "libleptonica.6.dylib", "liblept.5.dylib")
_LEPT_SEVERITY_NONE = 6  # leptonica's environ.h: L_SEVERITY_NONE, print no messages
BUILD_FOLDER = "tesseract"  # under resident.system_folder(): scripts/build-tesseract.sh's output
_lib: ctypes.CDLL | None = None
_lib_name = ""
_loaded_stamp: tuple[str, int, int] | None = None  # the loaded build's stamp: Debian library, size, time
_load_error = ""


class TessLibError(RuntimeError):
    """The library or a language model could not be used; ocr.py turns it into a DigitizeError."""


def _declare(lib: ctypes.CDLL) -> None:
    p, i, s, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_float
    signatures = {
        "TessVersion": (s, []),
        "TessBaseAPICreate": (p, []),
        "TessBaseAPIDelete": (None, [p]),
        "TessBaseAPIEnd": (None, [p]),
        "TessBaseAPIInit3": (i, [p, s, s]),
        "TessBaseAPISetVariable": (i, [p, s, s]),
        "TessBaseAPISetPageSegMode": (None, [p, i]),
        "TessBaseAPISetImage": (None, [p, p, i, i, i, i]),
        "TessBaseAPISetSourceResolution": (None, [p, i]),
        "TessBaseAPIRecognize": (i, [p, p]),
        "TessBaseAPIGetHOCRText": (p, [p, i]),
        "TessBaseAPIDetectOrientationScript": (i, [p, ctypes.POINTER(i), ctypes.POINTER(f),
                                                   ctypes.POINTER(s), ctypes.POINTER(f)]),
        "TessBaseAPIClear": (None, [p]),
        "TessDeleteText": (None, [p]),
        "TessMonitorCreate": (p, []),
        "TessMonitorDelete": (None, [p]),
        "TessMonitorSetDeadlineMSecs": (None, [p, i]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


def library() -> ctypes.CDLL | None:
    """libtesseract with its C API declared, or None (then ocr.py uses the command instead)."""
    global _lib, _lib_name, _loaded_stamp, _load_error
    if _lib is None and not _load_error:
        chosen = os.environ.get("DIGITIZE_LIBTESSERACT", "")  # a path, or "off" for the command
        if chosen == "off":
            _load_error = "DIGITIZE_LIBTESSERACT=off"
            return None
        built = None if chosen else _built()
        names = [chosen] if chosen else _candidates((*built[:1], *_LIBRARY_NAMES) if built else _LIBRARY_NAMES,
                                                     "tesseract")
        for name in names:
            try:
                lib = ctypes.CDLL(name)
                _declare(lib)
            except (OSError, AttributeError) as e:
                _load_error = str(e)
                continue
            _lib, _lib_name, _load_error = lib, name, ""
            _loaded_stamp = built[1] if built and name == built[0] else None
            _silence_leptonica()
            break
        else:
            _load_error = _load_error or "libtesseract not found"
    return _lib


def built_library() -> tuple[str, ...]:
    """setup.sh's faster build of the installed Tesseract (scripts/build-tesseract.sh: Debian's
    source, -O3, LTO, no OpenMP, line images kept as pixels, faster layout analysis, code for the
    processor's x86-64 level; the same hOCR for ~1/3 less CPU), as a one-path tuple, or () to use
    Debian's. Only while no other account can change it (it runs as us), the Debian library it
    stands in for is still the installed one (the stamp's path, size and time: a Debian update, a
    security fix say, is used at once, until setup.sh builds again) and this processor has every
    instruction set the build was made for (the stamp's ``requires``: a system copied or moved to
    an older processor would otherwise crash its page workers with SIGILL)."""
    found = _built()
    return (found[0],) if found else ()


def _built() -> tuple[str, tuple[str, int, int]] | None:
    """(setup's build, its stamp: the Debian library it stands in for, size, time), as
    :func:`built_library` accepts it."""
    folder = os.path.join(resident.system_folder(), BUILD_FOLDER)
    path, stamp = os.path.join(folder, "libtesseract.so.5"), os.path.join(folder, "stamp")
    if not (resident.trusted_path(path) and resident.trusted_path(stamp)):
        return None
    try:
        with open(stamp, encoding="utf-8") as f:
            fields = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
        stamped = fields["system_library"], int(fields["size"]), int(fields["mtime"])
    except (OSError, KeyError, ValueError, UnicodeDecodeError):
        return None
    if not set(fields.get("requires", "").split()) <= cpu_flags():
        return None
    return (path, stamped) if _as_stamped(*stamped) else None


def cpu_flags() -> set[str]:
    """The processor's instruction-set flags as Linux names them (/proc/cpuinfo's first ``flags``
    line: avx2, fma, bmi2...); empty where there is no such line."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return set()


def _as_stamped(system_library: str, size: int, mtime: int) -> bool:
    try:
        info = os.stat(system_library)
    except OSError:
        return False
    return info.st_size == size and int(info.st_mtime) == mtime


def build_outdated() -> bool:
    """Whether the Debian library that the loaded build stands in for is no longer the one it was
    built against (compared with the stamp read when loading, not with a later look: an update
    between the two would otherwise go unseen)."""
    return _loaded_stamp is not None and not _as_stamped(*_loaded_stamp)


def stands_in_for() -> str:
    """The Debian library that the loaded setup's build stands in for ("" when Debian's or none is
    loaded): the resident converter watches it like its loaded files, so a Debian update of it
    stops that converter taking runs (the next one loads the update) instead of waiting for idle."""
    return _loaded_stamp[0] if _loaded_stamp else ""


def library_name() -> str:
    """The file or name the loaded library was opened by ("" if none): which Tesseract reads."""
    library()
    return _lib_name


def _candidates(names: tuple[str, ...], *searched: str) -> Iterator[str]:
    """The library's usual file names, then what ``ctypes.util.find_library`` finds, asked only if
    none of them loaded: it runs ``ldconfig -p`` per name and, for a name ldconfig lacks (Debian's
    "leptonica"), gcc and ld, five processes forked from the resident converter on its way to serving."""
    yield from names
    for name in searched:
        found = ctypes.util.find_library(name)
        if found:
            yield found


def _silence_leptonica() -> None:
    """Leptonica, under Tesseract, prints its own errors straight to stderr (a noisy page's
    boxes at the image edge: "Error in pixScanForForeground: invalid box", harmless to the
    reading): they would reach the user's terminal beside a run's one line. Tesseract's own
    messages go to debug_file; the command's stderr was never shown either. The library
    Tesseract links is already loaded, so this opens the same one and sets its process-wide
    severity (inherited by forked page workers)."""
    for name in _candidates(_LEPTONICA_NAMES, "lept", "leptonica"):
        try:
            set_severity = ctypes.CDLL(name).setMsgSeverity
        except (OSError, AttributeError):
            continue
        set_severity.restype, set_severity.argtypes = ctypes.c_int, [ctypes.c_int]
        set_severity(_LEPT_SEVERITY_NONE)
        return


def version() -> str:
    lib = library()
    return lib.TessVersion().decode() if lib else ""


@dataclass
class Orientation:
    rotate: int  # degrees clockwise that turn the page upright
    confidence: float


class Engine:
    """One loaded language model (e.g. "vie", "eng", "osd"); not thread-safe, one per process."""

    def __init__(self, language: str, datapath: str | None = None):
        lib = library()
        if lib is None:
            raise TessLibError(_load_error)
        self._lib = lib
        self.language = language
        self._pid = os.getpid()  # a forked child shares the model; only its loader frees it
        self._handle = lib.TessBaseAPICreate()
        rc = lib.TessBaseAPIInit3(self._handle, datapath.encode() if datapath else None, language.encode())
        if rc != 0:
            lib.TessBaseAPIDelete(self._handle)
            self._handle = None
            raise TessLibError(f"Failed loading language '{language}'")
        for name, value in SETTINGS.items():
            lib.TessBaseAPISetVariable(self._handle, name.encode(), value.encode())
        # warnings ("Invalid resolution", "Empty page!!") would reach the user's terminal; the
        # command's stderr was never shown either
        lib.TessBaseAPISetVariable(self._handle, b"debug_file", os.devnull.encode())

    def _set_image(self, pixels: np.ndarray, dpi: float, psm: int) -> None:
        image = np.ascontiguousarray(pixels)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError("Tesseract takes 8-bit grey or RGB pixels")
        channels = 1 if image.ndim == 2 else image.shape[2]
        lib, h = self._lib, self._handle
        lib.TessBaseAPISetPageSegMode(h, psm)
        lib.TessBaseAPISetImage(h, image.ctypes.data, image.shape[1], image.shape[0], channels, image.strides[0])
        lib.TessBaseAPISetSourceResolution(h, max(70, round(dpi)))

    def hocr(self, pixels: np.ndarray, dpi: float, psm: int, timeout: float) -> bytes | None:
        """The page's hOCR, or None when recognition passed ``timeout`` seconds and was cancelled."""
        lib, h = self._lib, self._handle
        self._set_image(pixels, dpi, psm)
        monitor = lib.TessMonitorCreate()
        try:
            lib.TessMonitorSetDeadlineMSecs(monitor, max(1, min(int(timeout * 1000), 2**31 - 1)))
            start = time.monotonic()
            rc = lib.TessBaseAPIRecognize(h, monitor)
            if time.monotonic() - start >= timeout:
                return None
            if rc != 0:
                raise TessLibError("recognition failed")
            text = lib.TessBaseAPIGetHOCRText(h, 0)
            try:
                return ctypes.string_at(text) if text else b""
            finally:
                if text:
                    lib.TessDeleteText(text)
        finally:
            lib.TessMonitorDelete(monitor)
            lib.TessBaseAPIClear(h)

    def orientation(self, pixels: np.ndarray, dpi: float) -> Orientation | None:
        """OSD (needs the "osd" model): which way the page is turned, or None if no script found."""
        lib, h = self._lib, self._handle
        self._set_image(pixels, dpi, 0)
        deg, conf, script_conf = ctypes.c_int(), ctypes.c_float(), ctypes.c_float()
        script = ctypes.c_char_p()
        try:
            ok = lib.TessBaseAPIDetectOrientationScript(h, ctypes.byref(deg), ctypes.byref(conf),
                                                        ctypes.byref(script), ctypes.byref(script_conf))
        finally:
            lib.TessBaseAPIClear(h)
        # the API reports how far the image is turned; undoing it is the opposite turn
        return Orientation((360 - deg.value) % 360, conf.value) if ok else None

    def close(self) -> None:
        if self._handle:
            self._lib.TessBaseAPIEnd(self._handle)
            self._lib.TessBaseAPIDelete(self._handle)
            self._handle = None


_engines: dict[str, Engine] = {}


def engine(language: str) -> Engine:
    """The process's loaded model for ``language``; loaded on first use (0.04-0.1 s)."""
    found = _engines.get(language)
    if found is None:
        found = _engines[language] = Engine(language)
    return found


@atexit.register
def close_all() -> None:
    """End every engine this process loaded: Tesseract complains of leaked models on stderr
    otherwise. Models inherited through fork are left alone: freeing them would write to every
    page of them, copying ~100 MB per run for nothing (forked children leave with os._exit,
    past Tesseract's leak check)."""
    for e in _engines.values():
        if e._pid == os.getpid():
            e.close()
    _engines.clear()
