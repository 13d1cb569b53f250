"""Login throttling, counted once for all the portal's processes on one data dir.

Failures are rows of a small SQLite database in the data dir (``login-throttle.sqlite3``, 0600), so the
``[web] workers`` processes of a server share one count (each counting apart multiplied every limit by
the number of workers) and a restart forgets nothing still within ``login_pause``. It stays small: a row is
one failure of one counter (a user name and address, an address, a name), rows older than the pause are
deleted at each failure, each successful login and each start, each counter keeps only the rows its limit looks at, and the table never holds
more than MAX_ROWS rows (the oldest go first). A separate file, not the index: no migration, and a busy
index (batch runs) never delays a login.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import threading
import time
from pathlib import Path

from digitize.errors import StorageError
from storage.modes import private_file

log = logging.getLogger("digitize.web")
ADDRESS_FACTOR = 10  # an office behind one NAT address shares it: the address limit is this many times higher
NAME_FACTOR = 20  # failures for one name from everywhere before its logins are slowed (never refused)
NAME_DELAY = 2.0  # seconds each login for such a name waits before its password is checked
MAX_ROWS = 100_000  # failures kept at most (~10 MB): a flood of guesses cannot grow the file without bound
BUSY_TIMEOUT = 2.0  # seconds a process waits for another's write (each write is a few rows)
FILE_NAME = "login-throttle.sqlite3"
SCHEMA = ("CREATE TABLE IF NOT EXISTS failures (counter TEXT NOT NULL, at REAL NOT NULL)",
          "CREATE INDEX IF NOT EXISTS failures_counter ON failures (counter, at)",
          "CREATE INDEX IF NOT EXISTS failures_at ON failures (at)")


def address_group(address: str) -> str:
    """What one client controls: an IPv4 address, or an IPv6 /64 (one subscriber's network, in which it can
    pick any of 2**64 addresses). An IPv4-mapped IPv6 address is its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an address (a test client's name): as it is
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


class LoginThrottle:
    """After ``attempts`` failures for one user name *from one address*, or ten times that from one address
    across all names, logins for that name from that address (or anything from that address) pause for
    ``pause`` seconds. An IPv6 "address" here is its /64 (address_group).

    Failures are never counted per name alone to refuse a login: then anyone could lock an officer out by
    typing wrong passwords for the name from anywhere. A guesser spread over many addresses is slowed
    instead: past ``attempts * NAME_FACTOR`` failures for a name, every login for it waits NAME_DELAY
    seconds (the officer still gets in; argon2id and the 10-character minimum do the rest).

    ``data_dir``: where the shared counts live (None: in this process's memory only, for tests). Times are
    wall-clock seconds (``clock``), as processes share them. Behind a reverse proxy, set
    ``web.trusted_proxies``, or every client shares the proxy's address (and one guesser can pause
    everyone's logins).
    """

    def __init__(self, attempts: int, pause: float, clock=time.time, data_dir: str | Path | None = None):
        self.attempts, self.pause, self.clock = attempts, pause, clock
        self._lock = threading.Lock()  # one connection per process, used by one thread at a time
        if data_dir is None:
            path = ":memory:"
        else:
            path = str(Path(data_dir) / FILE_NAME)
            Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            private_file(path)
        try:
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")  # a power cut may forget the last failures
            for statement in SCHEMA:
                self._db.execute(statement)
            self._forget_expired()
        except sqlite3.Error as e:
            raise StorageError(f"cannot open the login throttle's database {path}: {e}") from None

    def _limits(self, name: str, address: str) -> list[tuple[str, int]]:
        """Every counter a login touches, with its limit: the (name, address) pair, then the address."""
        group = address_group(address)
        return [(f"pair\x00{name.casefold()}\x00{group}", self.attempts),
                (f"addr\x00{group}", self.attempts * ADDRESS_FACTOR)]

    def _name_counter(self, name: str) -> str:
        return f"name\x00{name.casefold()}"

    def _count(self, counter: str, limit: int, now: float) -> int:
        """Recent failures of ``counter``, counted up to ``limit`` (all a caller compares with)."""
        return self._db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM failures WHERE counter = ? AND at > ? "
                                "LIMIT ?)", (counter, now - self.pause, limit)).fetchone()[0]

    def _forget_expired(self) -> None:
        """Failures older than the pause count for nothing: their names and addresses are not kept."""
        self._db.execute("DELETE FROM failures WHERE at <= ?", (self.clock() - self.pause,))

    def _run(self, work):
        with self._lock:
            try:
                return work()
            except sqlite3.Error as e:
                raise StorageError(f"login throttle: {e}") from None

    def slowdown(self, name: str) -> float:
        """Seconds a login for ``name`` should wait first: NAME_DELAY while it is being guessed from many
        addresses, else 0."""
        limit = self.attempts * NAME_FACTOR
        guessed = self._run(lambda: self._count(self._name_counter(name), limit, self.clock()) >= limit)
        return NAME_DELAY if guessed else 0.0

    def blocked(self, name: str, address: str) -> bool:
        now = self.clock()
        return self._run(lambda: any(self._count(c, limit, now) >= limit for c, limit in self._limits(name, address)))

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        counters = [*(c for c, _ in self._limits(name, address)), self._name_counter(name)]
        keep = self.attempts * NAME_FACTOR  # the most any limit looks at

        def record() -> None:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO failures (counter, at) VALUES (?, ?)", [(c, now) for c in counters])
                self._forget_expired()
                for counter in counters:  # rows beyond what its limit counts
                    db.execute("DELETE FROM failures WHERE counter = ? AND rowid NOT IN (SELECT rowid FROM "
                               "failures WHERE counter = ? ORDER BY at DESC LIMIT ?)", (counter, counter, keep))
                # rows have distinct rowids, a new one the highest: at most MAX_ROWS stay, the oldest go first
                db.execute("DELETE FROM failures WHERE rowid <= (SELECT MAX(rowid) FROM failures) - ?", (MAX_ROWS,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

        self._run(record)

    def succeeded(self, name: str, address: str) -> None:
        counter = self._limits(name, address)[0][0]

        def forget() -> None:
            self._db.execute("DELETE FROM failures WHERE counter = ?", (counter,))
            self._forget_expired()

        self._run(forget)

    def close(self) -> None:
        with self._lock:
            self._db.close()
