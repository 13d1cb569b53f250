"""The page workers' result frames: what a worker may hand back, and what its parent refuses to build."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitize import wire
from digitize.errors import InputTooLargeError, OcrError
from digitize.records import PageReport


def _back(frame: bytes):
    text, size = wire.sizes(frame[:wire.HEADER.size])
    body = bytearray(frame[wire.HEADER.size:])
    assert len(body) == text + size
    return wire.read_frame(body[:text], body[text:])


def _forged(document, raw: bytes = b""):
    text = json.dumps(document).encode()
    return _back(wire.HEADER.pack(len(text), len(raw)) + text + raw)


def _report(**changes) -> dict:
    fields = {"number": 1, "width_px": 10, "height_px": 20, "dpi": 300, "dpi_source": "file", "colour_mode": "grey",
              "orientation": 0, "skew_angle": 0.0, "text_source": "ocr", "ocr_confidence": 90.0, "word_count": 1,
              "image_encoding": "jpeg", "image_bytes": 5}
    return {"ok": {"c": ["digitize.records.PageReport", {**fields, **changes}]}}


def test_values_come_back_as_they_were_sent() -> None:
    band = np.arange(24, dtype=np.uint8).reshape(4, 6)
    report = PageReport(1, 10, 20, 300.0, "file", "grey", 0, -0.5, "ocr", 91.25, 2, "jpeg", 99, text="Tờ khai",
                        warnings=["a"], timings={"ocr": 1.5}, paper={"box": [1, 2], "edge": (0.5, None)}, top_band=band)
    ok, (got, raw, floats) = _back(wire.result_frame([report, b"\x00\xff", np.linspace(0, 1, 3)]))
    assert ok and got == report and raw == b"\x00\xff" and floats.tolist() == [0.0, 0.5, 1.0]
    assert got.top_band.tolist() == band.tolist() and got.top_band.flags.writeable
    assert "Tờ khai".encode() in wire.result_frame(report)  # UTF-8, not \u escapes: text counts once against MAX_JSON


@pytest.mark.parametrize("document, raw, why", [
    ({"ok": {"c": ["subprocess.Popen", {"args": ["touch", "x"]}]}}, b"", "a class that may not cross"),
    ({"ok": {"c": ["builtins.eval", {}]}}, b"", "a class that may not cross"),
    (_report(number="1"), b"", "PageReport.number is a str"),
    (_report(warnings=[1]), b"", "PageReport.warnings is a list"),
    (_report(shell="rm -rf"), b"", "PageReport has no field 'shell'"),
    ({"ok": {"c": ["digitize.records.PageReport", {"number": 1}]}}, b"", "without all of its fields"),
    ({"ok": {"b": 10}}, b"12345", "a buffer past the frame's raw bytes"),
    ({"ok": {"b": 2}}, b"12345", "3 raw bytes nothing refers to"),
    ({"ok": {"a": ["object", [1]]}}, b"12345678", "an allowed dtype"),
    ({"ok": {"a": ["uint8", [1 << 40, 1 << 40]]}}, b"1", "larger than the frame's raw bytes"),
    ({"ok": {"a": ["uint8", [2 ** 70, 0]]}}, b"", "an array of a shape numpy cannot make"),  # review2 r2lows M1
    ({"ok": {"a": ["uint8", [2 ** 62, 2 ** 62, 0]]}}, b"", "an array of a shape numpy cannot make"),
    ({"ok": {"x": 1}}, b"", "an unknown tag"),
    ({"ok": {"d": [[[1], 2]]}}, b"", "a dict key"),
    ({"ok": 1, "error": 2}, b"", "neither a result nor an error"),
    ({"error": {"kinds": ["OcrError"], "message": "x"}}, b"1", "raw bytes after an error"),
    ({"error": {"kinds": "OcrError", "message": "x"}}, b"", "not a class's names and a line"),
])
def test_anything_else_is_malformed(document, raw, why) -> None:
    with pytest.raises(wire.Malformed, match=why):
        _forged(document, raw)


def test_frames_too_large_or_too_deep_are_refused_before_they_are_read() -> None:
    with pytest.raises(wire.Malformed, match="more than a result may be"):
        wire.sizes(wire.HEADER.pack(wire.MAX_JSON + 1, 0))
    with pytest.raises(wire.Malformed, match="more than a result may be"):
        wire.sizes(wire.HEADER.pack(2, wire.MAX_RAW + 1))
    for header in (wire.HEADER.pack(2 << 20, 0), wire.HEADER.pack(0, 65 << 20)):  # review2 r2lows M2
        with pytest.raises(wire.Malformed, match="more than a result may be"):
            wire.sizes(header)
    deep = "[" * 100000 + "]" * 100000
    text = deep.encode()
    with pytest.raises(wire.Malformed):
        wire.read_frame(b'{"ok":' + text + b"}", bytearray())
    with pytest.raises(wire.Malformed, match="nested too deeply"):
        _forged({"ok": json.loads("[" * 40 + "1" + "]" * 40)})
    with pytest.raises(wire.Malformed, match="not JSON"):
        wire.read_frame(b"\x80\x04pickle", bytearray())


def test_errors_are_rebuilt_only_as_our_own_or_builtin_classes() -> None:
    ok, error = _back(wire.error_frame(InputTooLargeError("page 3: too   many\npixels")))
    assert not ok and type(error) is InputTooLargeError and str(error) == "page 3: too many pixels"
    ok, error = _forged({"error": {"kinds": ["SidecarError", "InputError", "DigitizeError"], "message": "m"}})
    assert type(error).__name__ in ("SidecarError", "InputError") and str(error) == "m"  # or its nearest ancestor
    ok, error = _back(wire.error_frame(PermissionError(13, "Permission denied", "/x/page.pdf")))
    assert type(error) is PermissionError and error.errno == 13 and error.filename == "/x/page.pdf"
    ok, error = _forged({"error": {"kinds": ["exit"], "message": "m"}})
    assert type(error) is wire.WorkerError and str(error) == "exit: m"  # a builtin, but no exception class
    ok, error = _forged({"error": {"kinds": ["SystemExit", "BaseException"], "message": "0"}})
    assert type(error) is wire.WorkerError
    ok, error = _back(wire.error_frame(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")))
    assert type(error) is wire.WorkerError and str(error).startswith("UnicodeDecodeError: 'utf-8' codec")
    ok, error = _back(wire.error_frame(ValueError("bug"), "Traceback ...\nValueError: bug\n"))
    assert type(error) is ValueError and "Traceback" in str(error.__cause__)
    ok, error = _forged({"error": {"kinds": ["OcrTimeoutError", "OcrError"], "message": "late"}})
    assert isinstance(error, OcrError)


@pytest.mark.parametrize("kinds", [["SignerUnavailableError", "SigningError", "StorageError", "DigitizeError"],
                                   ["StorageError"], ["ConfigError"], ["ResourceError", "FileAccessError"]])
def test_a_worker_cannot_claim_an_outage_or_a_config_error(kinds) -> None:
    """Only errors a page may raise are rebuilt (review2 r2lows M3): a storage, signer, disk or config error would
    defer its file (JobResult.retryable) or fail the run; claimed by a page worker it is that page's OcrError."""
    ok, error = _forged({"error": {"kinds": kinds, "message": "x"}})
    assert type(error) is OcrError and str(error) == f"page worker reported {kinds[0]}: x"


def test_a_librarys_os_error_stays_an_os_error() -> None:
    """convert tells a full disk from a bug by `except OSError` and the errno (review2 r2lows L1)."""
    from PIL import UnidentifiedImageError

    class Full(OSError):
        pass

    ok, error = _back(wire.error_frame(UnidentifiedImageError("cannot identify image file 'p.png'")))
    assert type(error) is OSError and str(error) == "UnidentifiedImageError: cannot identify image file 'p.png'"
    ok, error = _back(wire.error_frame(Full(28, "No space left on device", "/tmp/page.pdf")))
    assert type(error) is OSError and error.errno == 28 and error.filename == "/tmp/page.pdf"


def test_a_workers_text_is_one_clean_bounded_line_in_its_parent() -> None:
    """A forged error's line cannot carry terminal escapes or line breaks into the one clear line, nor an
    unbounded file name (review2 r2lows L2)."""
    ok, error = _forged({"error": {"kinds": ["OcrError"], "message": "page 1:\x1b[2J\x1b]0;x\x07 bad\n  scan"}})
    assert type(error) is OcrError and str(error).isprintable() and "\x1b" not in str(error)
    assert str(error).startswith("page 1:") and str(error).endswith(" bad scan")
    ok, error = _forged({"error": {"kinds": ["FileNotFoundError\x1b[2J"], "message": "m", "errno": 2,
                                   "filename": "/x/" + "a" * 100_000 + "\x1b[2J"}})
    assert type(error) is wire.WorkerError and str(error).isprintable()
    ok, error = _forged({"error": {"kinds": ["FileNotFoundError"], "message": "m", "errno": 2,
                                   "filename": "/x/\x1b[2J" + "a" * 100_000, "trace": "T\x1b[2J\nline"}})
    assert type(error) is FileNotFoundError and len(error.filename) <= wire.MAX_TEXT and error.filename.isprintable()
    assert "\x1b" not in str(error.__cause__) and "line" in str(error.__cause__)


def test_a_value_the_parent_could_not_read_back_fails_in_the_worker() -> None:
    with pytest.raises(TypeError, match="cannot hand back a builtins.set"):
        wire.result_frame({1, 2})
    with pytest.raises(TypeError, match="cannot hand back a numpy.ndarray"):
        wire.result_frame(np.array([object()]))


def test_an_error_naming_a_file_that_is_not_utf8_crosses_the_channel() -> None:
    """A page worker's error naming such a file could not be framed, so the run failed with an internal error."""
    import os

    from digitize import wire
    from digitize.errors import InputError

    name = os.fsdecode(b"h\xe9.png")
    frame = wire.error_frame(InputError(f"{name}: image is corrupt"))
    size, raw_size = wire.HEADER.unpack_from(frame)
    ok, error = wire.read_frame(frame[wire.HEADER.size:wire.HEADER.size + size], bytearray())
    assert not ok and isinstance(error, InputError) and str(error) == "h\\xe9.png: image is corrupt"
