"""Seeing a log record happen, from another thread: for tests that wait on a writer's "waiting" line
rather than on a timer (the loggers' level is raised to INFO for the block, then put back)."""

from __future__ import annotations

import logging
import threading
from typing import Callable


class LogSeen(logging.Handler):
    def __init__(self, logger: str, match: Callable[[logging.LogRecord], bool]):
        super().__init__()
        self.logger, self.match = logging.getLogger(logger), match
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.match(record):
            self.seen.set()

    def __enter__(self) -> "LogSeen":
        self.level = self.logger.level
        self.logger.addHandler(self)
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)
