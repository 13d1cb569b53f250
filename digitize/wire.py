"""What a page worker hands back to its parent: JSON plus raw buffers, never a pickle.

A page worker decodes untrusted images; one a decoder exploit took over may write anything to its
result pipe. Unpickling that in the parent (a batch worker, a watcher, the converter's child) would
run its code there, so results travel as data the parent only parses: a frame is an 8-byte header
(the JSON's length, the raw bytes' length, each bounded before anything is allocated), the JSON, then
the raw bytes of every ``bytes`` value and numpy array, in the order the JSON names them.

In the JSON, null, booleans, numbers, strings and lists stand for themselves; any other value is an
object with one key: ``{"t": [...]}`` a tuple, ``{"d": [[key, value], ...]}`` a dict, ``{"b": n}`` n
raw bytes, ``{"a": [dtype, shape]}`` a C-ordered array of an allowed dtype, ``{"c": [name, {field:
value}]}`` a dataclass registered with ``carried`` (its fields checked against its annotations). An
error is ``{"error": {...}}``: its class's names, its one line and, for an OSError, its errno; the
parent rebuilds only Python's built-in exceptions and those of digitize's own a page may raise (bad input,
OCR, a missing tool); any other of ours becomes an OcrError that names it.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import json
import struct
import sys
import types
import typing
from typing import Any, Callable

from .terminal import printable

HEADER = struct.Struct("!II")  # the JSON's length, the raw bytes' length
# Bounds on what a worker makes its parent read and parse (review2 r2lows M2): 16 MB of JSON cost a
# parent seconds of CPU and hundreds of MB, with no deadline or Ctrl-C served meanwhile.
MAX_JSON = 1 << 20  # a page's report: its text (UTF-8; a dense A4 page ~5 k characters, A0 ~16x that) and a few fields
MAX_RAW = 64 << 20  # page 1's top band (one grey cell per pt): ~0.2 MB on A4, ~52 MB on PDF's largest page (14400 pt)
MAX_DEPTH = 32  # nesting of lists, tuples, dicts and dataclasses
MAX_TEXT = 4000  # characters of an error's line (and 16 times that of a bug's traceback)
DTYPES = frozenset({"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float32", "float64"})

_carried: dict[str, type] = {}


class Malformed(ValueError):
    """A frame that is not what a page worker's result must be: its worker is not to be trusted."""


class WorkerError(RuntimeError):
    """An exception of a class the parent does not rebuild (a library's own), as its name and line."""


def carried(cls: type) -> type:
    """Class decorator: instances of this dataclass may cross in a result (by name; nothing else may).
    The parent must have imported it: a name in a frame is looked up, never imported."""
    _carried[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


# -- the worker's side -------------------------------------------------------------------------------

def result_frame(value: Any) -> bytes:
    """A result as one frame; TypeError for a value the parent could not read back."""
    raw: list[bytes] = []
    return _frame({"ok": _encode(value, raw, 0)}, raw)


def error_frame(error: BaseException, trace: str = "") -> bytes:
    """An exception as one frame: enough to raise the same kind of error, with the same line, there."""
    message = " ".join(str(error).split())[:MAX_TEXT]
    if isinstance(error, OSError) and error.errno is not None:
        message = str(error.strerror or "")[:MAX_TEXT]
    described = {"kinds": [cls.__name__ for cls in type(error).__mro__], "message": message,
                 "errno": error.errno if isinstance(error, OSError) else None,
                 "filename": str(error.filename) if isinstance(error, OSError) and error.filename else None,
                 "trace": trace[-16 * MAX_TEXT:]}
    return _frame({"error": described}, [])


def _frame(document: dict, raw: list[bytes]) -> bytes:
    # Vietnamese: 3 bytes, not 6; a file name that is not UTF-8 (its bytes as lone surrogates, e.g. in
    # an error's message) crosses as it is, both ends passing surrogates through
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    size = sum(len(part) for part in raw)
    if len(text) > MAX_JSON or size > MAX_RAW:
        raise TypeError(f"a page worker's result is too large to hand back ({len(text)} + {size} bytes)")
    return b"".join([HEADER.pack(len(text), size), text, *raw])


def _encode(value: Any, raw: list[bytes], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise TypeError("a page worker's result is nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    np = sys.modules.get("numpy")  # not imported: no value can be numpy's (records.py stays light)
    if np is not None and isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_encode(v, raw, depth + 1) for v in value]
    if isinstance(value, tuple):
        return {"t": [_encode(v, raw, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"d": [[_encode(k, raw, depth + 1), _encode(v, raw, depth + 1)] for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray)):
        raw.append(bytes(value))
        return {"b": len(value)}
    if np is not None and isinstance(value, np.ndarray) and value.dtype.name in DTYPES:
        raw.append(np.ascontiguousarray(value).astype(value.dtype.newbyteorder("="), copy=False).tobytes())
        return {"a": [value.dtype.name, list(value.shape)]}
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    if _carried.get(name) is type(value):
        return {"c": [name, {f.name: _encode(getattr(value, f.name), raw, depth + 1)
                             for f in dataclasses.fields(value) if f.init}]}
    raise TypeError(f"a page worker cannot hand back a {name} (see digitize/wire.py)")


# -- the parent's side -------------------------------------------------------------------------------

def sizes(header: bytes) -> tuple[int, int]:
    """The JSON's and the raw bytes' lengths a frame's header announces, within their bounds."""
    text, size = HEADER.unpack(header)
    if text > MAX_JSON or size > MAX_RAW:
        raise Malformed(f"a frame of {text} + {size} bytes, more than a result may be")
    return text, size


def read_frame(text: bytes | memoryview, raw: bytearray | memoryview) -> tuple[bool, Any]:
    """(True, the result) or (False, the exception to raise) from a frame's JSON and raw bytes;
    Malformed for anything else. Only data is built: numbers, strings, containers, arrays, registered
    dataclasses and exceptions of known classes."""
    try:
        document = json.loads(bytes(text).decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as e:
        raise Malformed(f"not JSON ({type(e).__name__})") from None
    if not isinstance(document, dict) or len(document) != 1:
        raise Malformed("neither a result nor an error")
    if "error" in document:
        if raw:
            raise Malformed("raw bytes after an error")
        return False, _error(document["error"])
    if "ok" not in document:
        raise Malformed("neither a result nor an error")
    reader = _Reader(raw)
    try:
        value = reader.value(document["ok"], 0)
    except RecursionError:
        raise Malformed("nested too deeply") from None
    if reader.at != len(raw):
        raise Malformed(f"{len(raw) - reader.at} raw bytes nothing refers to")
    return True, value


class _Reader:
    def __init__(self, raw: bytearray | memoryview):
        self.raw, self.at = raw, 0

    def take(self, size: Any) -> memoryview:
        if type(size) is not int or size < 0 or self.at + size > len(self.raw):
            raise Malformed("a buffer past the frame's raw bytes")
        self.at += size
        return memoryview(self.raw)[self.at - size:self.at]

    def value(self, node: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise Malformed("nested too deeply")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.value(v, depth + 1) for v in node]
        if not isinstance(node, dict) or len(node) != 1:
            raise Malformed("an object that is no tagged value")
        (tag, body), = node.items()
        if tag == "t" and isinstance(body, list):
            return tuple(self.value(v, depth + 1) for v in body)
        if tag == "d" and isinstance(body, list):
            return self.mapping(body, depth)
        if tag == "b":
            return bytes(self.take(body))
        if tag == "a":
            return self.array(body)
        if tag == "c" and isinstance(body, list) and len(body) == 2:
            return self.instance(*body, depth)
        raise Malformed(f"an unknown tag {str(tag)[:20]!r}")

    def mapping(self, pairs: list, depth: int) -> dict:
        out = {}
        for pair in pairs:
            if not isinstance(pair, list) or len(pair) != 2:
                raise Malformed("a dict entry that is not a pair")
            key = self.value(pair[0], depth + 1)
            if not isinstance(key, (str, int, float, type(None))):
                raise Malformed("a dict key that is not a string or a number")
            out[key] = self.value(pair[1], depth + 1)
        return out

    def array(self, body: Any) -> Any:
        import numpy as np

        if (not isinstance(body, list) or len(body) != 2 or body[0] not in DTYPES or not isinstance(body[1], list)
                or len(body[1]) > 4 or not all(type(n) is int and n >= 0 for n in body[1])):
            raise Malformed("an array that is not an allowed dtype and a shape")
        dtype = np.dtype(body[0])
        count = 1
        for n in body[1]:
            count *= n
        if count * dtype.itemsize > len(self.raw):
            raise Malformed("an array larger than the frame's raw bytes")
        try:
            return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).reshape(body[1])
        except (ValueError, OverflowError):  # an empty array with a dimension past numpy's (review2 r2lows M1)
            raise Malformed("an array of a shape numpy cannot make") from None

    def instance(self, name: Any, fields: Any, depth: int) -> Any:
        cls = _carried.get(name) if isinstance(name, str) else None
        if cls is None or not isinstance(fields, dict):
            raise Malformed(f"a class that may not cross: {str(name)[:80]!r}")
        hints = _hints(cls)
        values = {}
        for key, node in fields.items():
            if key not in hints:
                raise Malformed(f"{cls.__name__} has no field {key[:40]!r}")
            values[key] = self.value(node, depth + 1)
            if not _fits(values[key], hints[key]):
                raise Malformed(f"{cls.__name__}.{key} is a {type(values[key]).__name__}")
        try:
            return cls(**values)
        except TypeError:  # a required field missing
            raise Malformed(f"{cls.__name__} without all of its fields") from None
        except (ValueError, OverflowError) as e:  # refused by the class itself
            raise Malformed(f"{cls.__name__} refused its fields ({type(e).__name__})") from None


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    return {name: hint for name, hint in typing.get_type_hints(cls).items() if name in init}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a decoded value is of its field's annotated type (element types of containers too)."""
    return _check(hint)(value)


@functools.lru_cache(maxsize=None)
def _check(hint: Any) -> Callable[[Any], bool]:
    """A test for values of HINT, built once per annotation (a report crosses once a page)."""
    if hint is Any:
        return lambda value: True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_check(arg) for arg in args]
        return lambda value: any(test(value) for test in options)
    if origin is None:
        kinds = (int, float) if hint is float else hint
        return lambda value: isinstance(value, kinds) and (hint is bool or not isinstance(value, bool))
    if origin is dict and args:
        key, item = _check(args[0]), _check(args[1])
        return lambda value: isinstance(value, dict) and all(key(k) and item(v) for k, v in value.items())
    if origin is tuple and args and args[-1] is not Ellipsis:
        items = [_check(arg) for arg in args]
        return lambda value: (isinstance(value, tuple) and len(value) == len(items)
                              and all(test(v) for test, v in zip(items, value)))
    if origin in (list, tuple) and args:
        item = _check(args[0])
        return lambda value: isinstance(value, origin) and all(item(v) for v in value)
    return lambda value: isinstance(value, origin)


def _error(described: Any) -> BaseException:
    from .errors import InputError, MissingDependencyError, OcrError, error_class

    # digitize's errors a page task may raise, the only ones rebuilt (review2 r2lows M3): a worker taken over
    # could otherwise pick one that defers its file as a storage, signer or disk outage, or fails a run as config
    PAGE_ERRORS = (InputError, OcrError, MissingDependencyError)

    if not isinstance(described, dict):
        raise Malformed("an error that is not described")
    kinds, message = described.get("kinds"), described.get("message")
    errno, filename, trace = described.get("errno"), described.get("filename"), described.get("trace") or ""
    if (not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds)
            or not isinstance(message, str) or not isinstance(trace, str)
            or not (errno is None or type(errno) is int) or not (filename is None or isinstance(filename, str))):
        raise Malformed("an error that is not a class's names and a line")
    # the worker's text, as the worker itself would have made it: one line, no terminal escapes, bounded (L2)
    message = " ".join(printable(message[:MAX_TEXT]).split())
    kinds = [printable(kind[:80]) for kind in kinds]
    filename = printable(filename[:MAX_TEXT]) if filename else None
    trace = "\n".join(printable(line) for line in trace[-16 * MAX_TEXT:].splitlines())
    error: BaseException = WorkerError(f"{kinds[0]}: {message}")
    cls = error_class(kinds, None)
    if cls is not None and not issubclass(cls, PAGE_ERRORS):  # a storage, signer or config outage is not a page's to claim
        return OcrError(f"page worker reported {cls.__name__}: {message}")
    if cls is None:
        cls = _builtin(kinds)
        if cls is not None and cls.__name__ != kinds[0]:  # a library's own class: said, but not rebuilt
            message = f"{kinds[0]}: {message}"
    if cls is not None:
        try:
            if issubclass(cls, OSError) and errno is not None:
                error = cls(errno, message, filename) if filename else cls(errno, message)
            else:
                error = cls(message)
        except (TypeError, ValueError):  # a class that is not built from one line (UnicodeDecodeError)
            pass
    if trace:
        error.__cause__ = _RemoteTraceback(trace)
    return error


def _builtin(kinds: list[str]) -> type[Exception] | None:
    """The first of Python's built-in exception classes among KINDS (a class and its ancestors): a library's
    OSError (PIL's UnidentifiedImageError, one carrying ENOSPC) stays an OSError here (review2 r2lows L1)."""
    for name in kinds:
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls
    return None


class _RemoteTraceback(Exception):
    """The page worker's traceback, shown under the error raised here (as concurrent.futures did)."""

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'
