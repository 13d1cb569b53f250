"""Structured pipeline logs: every step is an event with fields, as text or as JSON lines (``--log-json``).

JSON lines go straight into journald/Loki/ELK; the same events read as ``event key=value`` on a terminal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import Any

from digitize.secrets import mask_logging
from digitize.terminal import log_value, printable

LOGGER = "pipelines"
TEXT_FORMAT = "%(asctime)s digitize: %(levelname)s: %(message)s"  # a service's log needs the time of each line
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
# what json.dumps(ensure_ascii=False) leaves raw but a terminal reading the journal may act on: DEL and C1
# controls (U+009B is a CSI), bidi overrides and isolates, line separators; escaped as \uXXXX (same JSON value)
_INERT = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        # values are file names, titles and reasons other people chose: one line, one field each (log_value)
        text = " ".join(f"{k}={log_value(v)}" for k, v in fields.items() if v not in (None, ""))
        logger.log(level, "%s", f"{name} {text}" if text else name, extra={"event": name, "fields": fields})


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT lines for every record of every logger (the CLI's, the portal's, uvicorn's, the pipelines'):
    the one log sanitiser, so no call site has to remember it (review rev17ops M1). The message is made one
    printable line (line breaks become spaces; ESC, C1 and bidi controls inert, terminal.printable); a
    traceback's continuation lines are indented and made printable: no name, query value or path can start a
    line that reads as another log line, in the journal or in a terminal."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, TIME_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if text.isprintable():
            return text
        return "\n    ".join(printable(line) for line in text.splitlines())


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None),
        }
        fields = getattr(record, "fields", None)
        if fields:
            data.update({k: v for k, v in fields.items() if k not in data})
        else:
            data["message"] = record.getMessage()
        if record.exc_info or record.exc_text:  # exc_text: already formatted (and masked, digitize.secrets)
            data["exception"] = record.exc_text or self.formatException(record.exc_info)
        return _INERT.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(data, ensure_ascii=False, default=str))


def configure(json_lines: bool, events: bool = True) -> None:
    """Pipeline events at INFO (unless -q, or ``events`` is off and output is for a person); optionally JSON lines.

    A service (watch) logs every event; batch shows a progress line instead, and its per-file
    events only with ``-v`` or ``--log-json``.
    """
    root = logging.getLogger()
    if root.level <= logging.INFO or (root.level <= logging.WARNING and (events or json_lines)):
        logging.getLogger(LOGGER).setLevel(logging.INFO)
    for handler in root.handlers:
        handler.setFormatter(JsonLinesFormatter() if json_lines else TextFormatter())


def setup(level: int, json_lines: bool = False) -> None:
    """The root logger's one handler: stderr, TextFormatter (or JSON lines), the masking filter. Every process
    sets its logging up here: the CLI at start, batch workers and portal server processes (which are spawned,
    so start bare) through :func:`restore`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    mask_logging()


def snapshot() -> tuple[int, bool, int]:
    """This process's logging choices, to hand to worker processes (spawned workers start bare)."""
    json_lines = any(isinstance(h.formatter, JsonLinesFormatter) for h in logging.getLogger().handlers)
    return logging.getLogger(LOGGER).getEffectiveLevel(), json_lines, logging.getLogger().level


def restore(state: tuple[int, bool, int]) -> None:
    level, json_lines, root_level = state
    setup(root_level, json_lines)
    logging.getLogger(LOGGER).setLevel(level)
