"""Bounded retries with exponential backoff: a slow or restarting server is waited for, briefly.

Only errors the caller classifies as transient are retried; after the last attempt the caller gets a
:class:`~digitize.errors.StorageError` naming what failed, never an endless hang.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from digitize.errors import StorageError

T = TypeVar("T")
log = logging.getLogger("digitize.storage")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delays(self) -> list[float]:
        """Sleep before each retry: 0.2, 0.4, 0.8, ... capped; ``attempts - 1`` values."""
        return [min(self.base_delay * 2**i, self.max_delay) for i in range(max(self.attempts - 1, 0))]


def retrying(call: Callable[[], T], what: str, policy: RetryPolicy,
             transient: Callable[[BaseException], bool], sleep: Callable[[float], None] = time.sleep) -> T:
    delays = policy.delays()
    for attempt in range(len(delays) + 1):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - classified below
            if not transient(e):
                raise
            if attempt == len(delays):
                raise StorageError(f"{what} failed after {attempt + 1} attempts: {type(e).__name__}: {e}") from e
            log.warning("%s failed (%s), retrying in %.1f s", what, type(e).__name__, delays[attempt])
            sleep(delays[attempt])
    raise AssertionError("unreachable")
