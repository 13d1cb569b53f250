"""Login throttling, counted once for all the portal's processes on one data dir.

Failures are rows of a small SQLite database in the data dir (``login-throttle.sqlite3``, 0600), so the
``[web] workers`` processes of a server share one count (each counting apart multiplied every limit by
the number of workers) and a restart forgets nothing still within ``login_pause``. A login is counted as a
failure *before* its password is checked (:meth:`LoginThrottle.reserve`: check and count in one write
transaction), and the count is taken back when the password was right: parallel guesses cannot all pass
the check before the first failure is written. It stays small: a row is one failure of one counter (a user
name and address, an address, a name); each counter keeps only the rows its limit looks at, expired rows
go at each start and a few at each attempt, and the table never holds more than MAX_ROWS rows (when it is
full of recent failures, logins are refused until some expire: evicting the oldest would let a flood push a
guesser's own counters out). A separate file, not the index: no migration, and a busy index (batch runs) never delays a
login. If the file fails (locked past its wait, disk full), this process counts in its memory instead:
logins stay limited, and a right password is never refused for it.

Password checks themselves are bounded too (:meth:`LoginThrottle.password_check`): at most MAX_CHECKS at
once in one process (argon2id takes 64 MiB and four threads each), handed out first come, first served to
at most MAX_WAITERS waiting logins; a login beyond those is told "try later" at once, and that refusal
counts against its address (not its name), so flooding the queue spends the flooder's own budget. Refusals
write nothing to the shared file: a login over a limit is refused on a read (:meth:`LoginThrottle.admits`,
no write lock taken), and one refused for want of a slot is counted in this process's memory (a bounded
table, :meth:`LoginThrottle.refused_busy`); only logins whose password is then checked are counted in the
file (:meth:`LoginThrottle.reserve`, after the slot is taken). There is
no per-name serialisation: a lease per name let anyone keep an officer's name busy from addresses each
under its limit and so lock the officer out (the throttle's promise is "slowed, never locked").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from digitize.errors import StorageError
from storage.index_sqlite import use_wal
from storage.modes import private_file, private_folder

log = logging.getLogger("digitize.web")
ADDRESS_FACTOR = 10  # an office behind one NAT address shares it: the address limit is this many times higher
WIDE_FACTOR = 4  # an IPv6 /48 (a site's many /64s): this many times the tries per name of one /64
NAME_FACTOR = 20  # failures for one name from everywhere before its logins are slowed (never refused)
NAME_DELAY = 2.0  # seconds each login for such a name waits before its password is checked
MAX_ROWS = 100_000  # failures kept at most (~10 MB): a flood of guesses cannot grow the file without bound
EXPIRED_PER_ATTEMPT = 200  # expired rows one attempt deletes (bounded work on the login path)
BUSY_TIMEOUT = 2.0  # seconds a process waits for another's write (each write is a few rows)
MAX_CHECKS = 2  # password checks in flight in one process (argon2id as argon2-cffi's defaults: 64 MiB and four
# threads each, ~0.36 CPU-s measured on the 2-core machine)
MAX_WAITERS = 8  # logins queued (first come, first served) for a check slot; more are told "try later" at once
SLOT_WAIT = 5.0  # seconds a queued login waits at most (MAX_WAITERS / MAX_CHECKS checks ahead of it: ~1.5 s idle)
FILE_NAME = "login-throttle.sqlite3"
SCHEMA = ("CREATE TABLE IF NOT EXISTS failures (counter TEXT NOT NULL, at REAL NOT NULL)",
          "CREATE INDEX IF NOT EXISTS failures_counter ON failures (counter, at)",
          "CREATE INDEX IF NOT EXISTS failures_at ON failures (at)")


class LoginBusy(Exception):
    """No password check now: this process runs MAX_CHECKS and MAX_WAITERS logins already wait for one."""


class CheckSlots:
    """At most ``limit`` password checks at once, given to waiting logins in their order of arrival (a
    polled slot let newcomers jump ahead of a login that had waited), with at most ``waiters`` waiting.
    Thread-safe and not bound to one event loop (a waiter is a future of its own loop)."""

    def __init__(self, limit: int, waiters: int):
        self._lock = threading.Lock()
        self._free, self._most = limit, waiters
        self._queue: collections.deque = collections.deque()

    async def acquire(self, timeout: float) -> None:
        """A slot, or LoginBusy: at once if ``waiters`` wait already, else after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free and not self._queue:
                self._free -= 1
                return
            if len(self._queue) >= self._most:
                raise LoginBusy()
            entry = (loop, loop.create_future())
            self._queue.append(entry)
        try:
            await asyncio.wait_for(entry[1], timeout)
        except BaseException as e:
            with self._lock:
                granted = entry not in self._queue
                if not granted:
                    self._queue.remove(entry)
            if granted:  # the slot came as the wait ended: pass it on
                self.release()
            if isinstance(e, TimeoutError):
                raise LoginBusy() from None
            raise

    def release(self) -> None:
        with self._lock:
            if not self._queue:
                self._free += 1
                return
            loop, future = self._queue.popleft()  # the slot passes straight to the longest waiting
        loop.call_soon_threadsafe(lambda: future.done() or future.set_result(None))


def bare_address(address: str) -> str:
    """The address alone: without IPv6 brackets, a port (``[2001:db8::1]:443``, ``10.0.0.7:50000``) or a
    zone (``fe80::1%eth0``), so that one client is one counter however a proxy wrote its address."""
    address = address.strip()
    if address.startswith("["):
        address = address[1:].split("]", 1)[0]
    elif address.count(":") == 1:
        address = address.split(":", 1)[0]
    return address.split("%", 1)[0]


def address_group(address: str, prefix: int = 64) -> str:
    """What one client controls: an IPv4 address, or an IPv6 /64 (one subscriber's network, in which it can
    pick any of 2**64 addresses; ``prefix``: a wider one). An IPv4-mapped IPv6 address is its IPv4 address."""
    try:
        ip = ipaddress.ip_address(bare_address(address))
    except ValueError:
        return address  # not an address (a test client's name): as it is
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False)) if ip.version == 6 else str(ip)


@dataclass(frozen=True)
class Attempt:
    """A login let through: already counted as a failure (``rowids``), to be taken back if it succeeds.
    ``delay``: seconds to wait before checking its password (the name is being guessed)."""

    delay: float
    pair: str
    rowids: tuple[int, ...]
    in_memory: bool  # counted in this process's memory: the shared file had failed
    counters: tuple[str, ...] = ()  # what each of ``rowids`` counts


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    if path != ":memory:":
        use_wal(db, BUSY_TIMEOUT)  # workers starting together on a new file race for the switch
        db.execute("PRAGMA synchronous = NORMAL")  # a power cut may forget the last failures
    for statement in SCHEMA:
        db.execute(statement)
    return db


def _own_regular_file(path: str) -> None:
    """The data dir is other people's to write only if misconfigured; still, never follow a link there
    (sqlite3 would) or use a file someone else made."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        raise StorageError(f"the login throttle's database {path} is not a regular file of this user; "
                           "remove it (the portal makes a new one)")


class LoginThrottle:
    """After ``attempts`` failures for one user name *from one address*, or ten times that from one address
    across all names, logins for that name from that address (or anything from that address) pause for
    ``pause`` seconds. An IPv6 "address" here is its /64 (address_group); its /48 is counted too, with
    WIDE_FACTOR times the tries per name and NAME_FACTOR times the tries across names.

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
        self._lock = threading.Lock()  # the connections are per process, used by one thread at a time
        self._checks = CheckSlots(MAX_CHECKS, MAX_WAITERS)  # password checks in flight in this process
        self._memory = _connect(":memory:")  # the fallback (and, without a data dir, the only count)
        self._busy = _connect(":memory:")  # "try later" refusals (refused_busy): a table and a bound of their own
        if data_dir is None:
            self._db, path = self._memory, ":memory:"
            return
        path = str(Path(data_dir) / FILE_NAME)
        try:
            private_folder(data_dir)
            private_file(path)
            _own_regular_file(path)
            self._db = _connect(path)
            _own_regular_file(path)  # not swapped for a link while it was opened
            self._db.execute("DELETE FROM failures WHERE at <= ?", (self.clock() - self.pause,))
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open the login throttle's database {path}: {e}") from None

    def _limits(self, name: str, address: str) -> list[tuple[str, int]]:
        """Every counter a login touches, with its limit: the (name, address) pair, then the address."""
        group, name = address_group(address), name.casefold()
        limits = [(f"pair\x00{name}\x00{group}", self.attempts), (f"addr\x00{group}", self.attempts * ADDRESS_FACTOR)]
        if (site := address_group(address, 48)) != group:  # one site's /48 holds 65 536 /64s to rotate through
            limits += [(f"pair\x00{name}\x00{site}", self.attempts * WIDE_FACTOR),
                       (f"addr\x00{site}", self.attempts * NAME_FACTOR)]
        return limits

    def _count(self, db: sqlite3.Connection, counter: str, limit: int, now: float) -> int:
        """Recent failures of ``counter``, counted up to ``limit`` (all a caller compares with)."""
        return db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM failures WHERE counter = ? AND at > ? LIMIT ?)",
                          (counter, now - self.pause, limit)).fetchone()[0]

    def admits(self, name: str, address: str) -> float | None:
        """None if this login must pause, else the seconds it waits first (its name is being guessed): read
        only, so a refused login costs no write and takes no write lock. :meth:`reserve` checks again, in
        its transaction, before the password is checked."""
        now = self.clock()
        keep = self.attempts * NAME_FACTOR
        with self._lock:
            dbs = [self._memory, self._busy] if self._db is self._memory else [self._db, self._memory, self._busy]
            try:
                def count(counter: str, limit: int) -> int:
                    return sum(self._count(d, counter, limit, now) for d in dbs)

                if any(count(c, limit) >= limit for c, limit in self._limits(name, address)):
                    return None
                return NAME_DELAY if count(f"name\x00{name.casefold()}", keep) >= keep else 0.0
            except sqlite3.Error as e:
                log.warning("login throttle: %s; checking this login against this process's memory", e)
                return 0.0  # reserve counts it (in memory if the file still fails) and checks the limits

    def refused_busy(self, name: str, address: str) -> None:
        """A login told "try later" for want of a check slot: counted against its address (a flood spends its
        sender's budget), not its name, in this process's memory only (bounded by MAX_ROWS, each counter by
        what its limit looks at, in a table of its own: a flood of refusals never fills the fallback table
        that counts checked passwords while the shared file fails): the shared file is written only for
        passwords checked."""
        now = self.clock()
        counters = [c for c, _ in self._limits(name, address) if c.startswith("addr\x00")]
        keep = self.attempts * NAME_FACTOR
        with self._lock:
            db = self._busy
            if not self._room(db, len(counters), now):
                return
            db.executemany("INSERT INTO failures (counter, at) VALUES (?, ?)", [(c, now) for c in counters])
            for counter in counters:
                db.execute("DELETE FROM failures WHERE counter = ? AND rowid NOT IN (SELECT rowid FROM "
                           "failures WHERE counter = ? ORDER BY at DESC LIMIT ?)", (counter, counter, keep))

    def reserve(self, name: str, address: str) -> Attempt | None:
        """None if this login must pause; else the attempt, already counted as a failure. One write
        transaction checks and counts, so parallel logins see each other's attempts."""
        with self._lock:
            if self._db is not self._memory:
                try:
                    return self._reserve(self._db, name, address, False)
                except sqlite3.Error as e:
                    log.warning("login throttle: %s; counting this login in this process's memory", e)
            return self._reserve(self._memory, name, address, True)

    def _reserve(self, db: sqlite3.Connection, name: str, address: str, in_memory: bool) -> Attempt | None:
        now = self.clock()
        limits = self._limits(name, address)
        name_counter = f"name\x00{name.casefold()}"
        keep = self.attempts * NAME_FACTOR  # the most any limit looks at
        others = [self._busy] if db is self._memory else [self._memory, self._busy]  # counted there while the file failed

        def count(counter: str, limit: int) -> int:
            return sum(self._count(d, counter, limit, now) for d in (db, *others))

        db.execute("BEGIN IMMEDIATE")
        try:
            if any(count(c, limit) >= limit for c, limit in limits):
                db.execute("ROLLBACK")
                return None
            delay = NAME_DELAY if count(name_counter, keep) >= keep else 0.0
            counters = [*(c for c, _ in limits), name_counter]
            if not self._room(db, len(counters), now):
                db.execute("ROLLBACK")
                log.warning("login throttle: %d recent failures, the most it keeps; refusing logins", MAX_ROWS)
                return None
            rowids = tuple(db.execute("INSERT INTO failures (counter, at) VALUES (?, ?)", (c, now)).lastrowid
                           for c in counters)
            db.execute("DELETE FROM failures WHERE rowid IN (SELECT rowid FROM failures WHERE at <= ? LIMIT ?)",
                       (now - self.pause, EXPIRED_PER_ATTEMPT))
            for counter in counters:  # rows beyond what its limit counts
                db.execute("DELETE FROM failures WHERE counter = ? AND rowid NOT IN (SELECT rowid FROM "
                           "failures WHERE counter = ? ORDER BY at DESC LIMIT ?)", (counter, counter, keep))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return Attempt(delay, limits[0][0], rowids, in_memory, tuple(counters))

    def _room(self, db: sqlite3.Connection, rows: int, now: float) -> bool:
        """Whether ``rows`` more fit under MAX_ROWS, expired rows deleted first if not. Full of recent
        failures, logins are refused rather than the oldest rows dropped (a guesser's own counters)."""
        if db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] + rows <= MAX_ROWS:
            return True
        db.execute("DELETE FROM failures WHERE at <= ?", (now - self.pause,))
        return db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] + rows <= MAX_ROWS

    def release(self, attempt: Attempt, succeeded: bool) -> None:
        """Take the attempt's count back: its password was right (then the pair's earlier failures go too),
        or it was never checked (the archive did not answer). Never raises: a failing throttle file must not
        refuse a right password (its rows then expire)."""
        rowids = list(attempt.rowids)
        with self._lock:
            db = self._memory if attempt.in_memory else self._db
            try:
                marks = ", ".join("?" * len(rowids))
                db.execute(f"DELETE FROM failures WHERE rowid IN ({marks})", rowids)
                if succeeded:
                    db.execute("DELETE FROM failures WHERE counter = ?", (attempt.pair,))
            except sqlite3.Error as e:
                log.warning("login throttle: %s; the attempt stays counted until it expires", e)

    # -- at most MAX_CHECKS password checks at once per process ---------------------------------
    @contextlib.asynccontextmanager
    async def password_check(self):
        """Around one password check: a process slot, waited for on the event loop (holding no thread) in
        order of arrival up to SLOT_WAIT; LoginBusy at once if MAX_WAITERS wait already, or when the wait
        ends. No name is served before another (see the module's docstring)."""
        await self._checks.acquire(SLOT_WAIT)
        try:
            yield
        finally:
            self._checks.release()

    def close(self) -> None:
        with self._lock:
            if self._db is not self._memory:
                self._db.close()
            self._memory.close()
            self._busy.close()
