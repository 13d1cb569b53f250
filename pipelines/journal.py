"""Claims journal in ``INBOX/.digitize/claims``: which file the watcher was working on when it died.

A claim is written (atomically) before a file is processed and removed only after the source has been
moved or deleted. A claim found at start-up means a crash mid-file: the file is redone (storage is
idempotent by content hash, so no duplicate), but only once more. A file that keeps killing the
watcher (say, it makes a library crash) is quarantined instead of looping forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from digitize.fsutil import atomic_write_text

MAX_ATTEMPTS = 2  # the first try plus one redo after a crash


@dataclass
class Claim:
    path: str  # relative to the inbox
    attempts: int
    started: float


class Journal:
    def __init__(self, state_dir: Path):
        self.dir = state_dir / "claims"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _file(self, relative: str) -> Path:
        return self.dir / (hashlib.sha256(relative.encode("utf-8")).hexdigest()[:32] + ".json")

    def get(self, relative: str) -> Claim | None:
        try:
            return Claim(**json.loads(self._file(relative).read_text(encoding="utf-8")))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def claim(self, relative: str) -> Claim:
        """Record one more attempt at ``relative``; fsynced before the work starts."""
        previous = self.get(relative)
        claim = Claim(relative, (previous.attempts if previous else 0) + 1, time.time())
        atomic_write_text(self._file(relative), json.dumps(asdict(claim), ensure_ascii=False))
        return claim

    def release(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(relative).unlink()

    def pending(self) -> list[Claim]:
        """Claims left by a previous run (crash or kill mid-file)."""
        claims = []
        for file in sorted(self.dir.glob("*.json")):
            with contextlib.suppress(ValueError, TypeError, OSError):
                claims.append(Claim(**json.loads(file.read_text(encoding="utf-8"))))
        return claims
