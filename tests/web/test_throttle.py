"""Login throttling is counted once per data dir: the portal's worker processes (each its own app) share
the failures, a restart keeps them, and the table stays bounded."""

from __future__ import annotations

import re
import sqlite3

import pytest
from fastapi.testclient import TestClient

from digitize.config import Settings
from web import throttle as throttle_module
from web.app import create_app
from web.throttle import FILE_NAME, LoginThrottle


def failed_login(app, name: str, address: str) -> int:
    client = TestClient(app, client=(address, 50000))
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    return client.post("/login", data={"name": name, "password": "not-the-password", "csrf": csrf},
                       follow_redirects=False).status_code


def test_two_apps_over_one_data_dir_share_the_count(tmp_path):
    """Each worker process counted apart: with N workers a guesser had N times the tries."""
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.secure_cookies = False
    settings.web.login_attempts = 3
    first, second = create_app(settings), create_app(settings)  # two worker processes' apps
    assert [failed_login(app, "lan", "10.0.0.7") for app in (first, second, first)] == [401, 401, 401]
    assert failed_login(second, "lan", "10.0.0.7") == 429
    assert failed_login(first, "lan", "10.0.0.7") == 429
    assert failed_login(second, "lan", "10.0.0.8") == 401  # another address is not paused
    assert oct((tmp_path / "data" / FILE_NAME).stat().st_mode & 0o777) == "0o600"


def test_a_restart_keeps_the_count_and_the_pause_ends_it(tmp_path):
    now = [1000.0]
    first = LoginThrottle(2, 300, clock=lambda: now[0], data_dir=tmp_path)
    assert first.reserve("lan", "10.0.0.7")  # counted as a failure until released
    first.close()
    again = LoginThrottle(2, 300, clock=lambda: now[0], data_dir=tmp_path)  # the server restarted
    assert again.reserve("lan", "10.0.0.7")
    assert again.reserve("lan", "10.0.0.7") is None
    now[0] += 301
    again.release(again.reserve("lan", "10.0.0.7"), succeeded=True)
    again.close()
    LoginThrottle(2, 300, clock=lambda: now[0], data_dir=tmp_path).close()  # a start forgets expired failures
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0


def test_the_failures_table_is_bounded_and_keeps_the_oldest_counts(tmp_path, monkeypatch):
    """Full, the table dropped its oldest rows: a flood of other names pushed a guesser's counters out."""
    monkeypatch.setattr(throttle_module, "MAX_ROWS", 50)
    now = [0.0]
    counts = LoginThrottle(3, 300, clock=lambda: now[0], data_dir=tmp_path)
    for _ in range(3):
        assert counts.reserve("officer-a", "10.9.9.9")  # the guesser, paused now
    for n in range(200):  # a flood of other names and addresses (3 counters a failure)
        now[0] += 0.01
        counts.reserve(f"name-{n}", f"10.1.{n // 250}.{n % 250}")
    assert counts.reserve("officer-a", "10.9.9.9") is None  # still paused
    assert counts.reserve("someone", "10.2.0.1") is None  # full of recent failures: refused
    now[0] += 301  # they expired
    assert counts.reserve("someone", "10.2.0.1")
    counts.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] <= 50


def test_one_counter_keeps_only_what_its_limit_counts(tmp_path):
    counts = LoginThrottle(2, 300, data_dir=tmp_path)
    for n in range(100):  # one name from many addresses
        assert counts.reserve("lan", f"10.0.0.{n}")
    counts.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        per_counter = [n for (n,) in db.execute("SELECT COUNT(*) FROM failures GROUP BY counter")]
    assert max(per_counter) == 2 * throttle_module.NAME_FACTOR  # the name's counter


# -- review of sec11: parallel guesses, a failing throttle file, slowed names, the file itself --------------
PASSWORD = "mat-khau-thu-nghiem-2024"


@pytest.fixture
def portal(tmp_path):
    from storage import access
    from storage.archive import Archive

    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.secure_cookies = False
    settings.web.login_attempts = 3
    with Archive.open(settings) as archive:
        access.add_user(archive.index, "officer-a", "officer", ["000.00.31.H56"], PASSWORD)
    return settings


def in_parallel(calls) -> list:
    """Each call in its own thread, all let go at once; their answers in order."""
    import threading

    start, answers = threading.Barrier(len(calls)), [None] * len(calls)

    def run(n):
        start.wait(30)
        answers[n] = calls[n]()

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers


def post_login(client: TestClient, name: str, password: str, address: str | None = None):
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    return client.post("/login", data={"name": name, "password": password, "csrf": csrf}, follow_redirects=False)


def slow_wrong_passwords(monkeypatch, seconds: float) -> None:
    """Every password check takes ``seconds`` (argon2 on a loaded server) and fails."""
    import time

    from storage.access import AuthenticationError
    from web import pages

    def check(index, name, password):
        time.sleep(seconds)
        raise AuthenticationError("wrong user name or password")

    monkeypatch.setattr(pages, "authenticate_password", check)


def test_parallel_failing_logins_get_no_more_guesses_than_the_limit(portal, monkeypatch):
    """blocked() was checked, the password verified, and only then the failure written: parallel logins
    all passed the check before the first failure was counted (~40 guesses per worker per pause)."""
    slow_wrong_passwords(monkeypatch, 0.5)
    app = create_app(portal)
    clients = [TestClient(app, client=("10.0.0.7", 50000)) for _ in range(10)]
    tokens = [re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1) for c in clients]
    answers = in_parallel([lambda c=c, t=t: c.post("/login", data={"name": "lan", "password": "wrong-password-1",
                                                                   "csrf": t}, follow_redirects=False).status_code
                           for c, t in zip(clients, tokens)])
    assert sorted(answers) == [401] * 3 + [429] * 7


class FailingWrites:
    """A throttle connection whose statements starting with one of ``failing`` raise (a lock held past the
    busy wait, a full disk); the rest run."""

    def __init__(self, db: sqlite3.Connection, failing: tuple[str, ...]):
        self.db, self.failing = db, failing

    def execute(self, sql: str, *args):
        if sql.lstrip().upper().startswith(self.failing):
            raise sqlite3.OperationalError("database is locked")
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args):
        return self.execute(sql) if sql.lstrip().upper().startswith(self.failing) else self.db.executemany(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def test_wrong_passwords_are_still_counted_when_the_throttle_file_fails(portal):
    """failed() raised: a 503, and the failure never counted (unlimited guesses while the file was locked)."""
    app = create_app(portal)
    app.state.throttle._db = FailingWrites(app.state.throttle._db, ("BEGIN", "INSERT", "DELETE"))
    client = TestClient(app, client=("10.0.0.7", 50000))
    answers = [post_login(client, "officer-a", "wrong-password-1").status_code for _ in range(4)]
    assert answers == [401, 401, 401, 429]  # counted in the process's memory


def test_a_right_password_gets_in_when_the_throttle_file_fails(portal):
    """succeeded() raised (a locked file, or its cleanup of expired rows): a correct login was refused."""
    app = create_app(portal)
    app.state.throttle._db = FailingWrites(app.state.throttle._db, ("DELETE",))
    client = TestClient(app, client=("10.0.0.7", 50000))
    assert post_login(client, "officer-a", PASSWORD).status_code == 303
    assert client.get("/search", follow_redirects=False).status_code == 200


def test_a_slowed_name_holds_no_worker_thread(portal, monkeypatch, tmp_path):
    """Each login for a guessed name slept NAME_DELAY in a worker thread: 40 of them held every thread, and
    every other request of the portal queued behind them (answered only once a slowed login ended)."""
    import threading
    import time

    monkeypatch.setattr(throttle_module, "NAME_DELAY", 10.0)  # outlasts a loaded machine's /healthz
    slow_wrong_passwords(monkeypatch, 0.0)
    app = create_app(portal)
    admitted, delays, real_admits = threading.Semaphore(0), [], app.state.throttle.admits

    def admits(*args):  # the login has its delay: it waits it out from now on
        try:
            return real_admits(*args)
        finally:
            delays.append(time.monotonic())
            admitted.release()

    app.state.throttle.admits = admits
    with sqlite3.connect(tmp_path / "data" / FILE_NAME) as db:  # the name guessed from many addresses
        db.executemany("INSERT INTO failures (counter, at) VALUES (?, ?)",
                       [("name\x00officer-a", time.time())] * 3 * throttle_module.NAME_FACTOR)
    ended: list[int] = []  # the logins' answers
    with TestClient(app) as client:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        logins = [threading.Thread(target=lambda: ended.append(client.post(
            "/login", data={"name": "officer-a", "password": "wrong-password-1", "csrf": csrf},
            follow_redirects=False).status_code), daemon=True) for _ in range(45)]
        for thread in logins:
            thread.start()
        assert all(admitted.acquire(timeout=60) for _ in logins)  # all 45 are waiting out their delay now
        assert client.get("/healthz").status_code == 200  # a sync route: it needs a worker thread
        answered = time.monotonic()
        for thread in logins:
            thread.join(60)
    # while every delay still ran: it did not wait for a slowed login to give its thread back
    assert answered < min(delays) + throttle_module.NAME_DELAY, "/healthz waited for a slowed login's thread"
    assert len(ended) == 45 and set(ended) <= {401, 429}  # each answered, once its delay was over


def test_a_symlinked_throttle_file_is_refused(tmp_path):
    """private_file skipped a link silently, and sqlite3 followed it (to any file the portal may write)."""
    from digitize.errors import StorageError

    target = tmp_path / "elsewhere.sqlite3"
    sqlite3.connect(target).close()
    (tmp_path / "data").mkdir(mode=0o700)
    (tmp_path / "data" / FILE_NAME).symlink_to(target)
    with pytest.raises(StorageError, match="not a regular file"):
        LoginThrottle(3, 300, data_dir=tmp_path / "data")


def test_a_throttle_file_of_another_user_is_refused(tmp_path):
    import os

    from digitize.errors import StorageError

    if os.geteuid() != 0:
        pytest.skip("needs root to make a file of another user")
    (tmp_path / "data").mkdir(mode=0o700)
    sqlite3.connect(tmp_path / "data" / FILE_NAME).close()
    os.chown(tmp_path / "data" / FILE_NAME, 65534, 65534)
    with pytest.raises(StorageError, match="not a regular file of this user"):
        LoginThrottle(3, 300, data_dir=tmp_path / "data")


def test_workers_starting_together_on_a_new_throttle_file_wait_for_each_other(tmp_path):
    """PRAGMA journal_mode = WAL answers "database is locked" at once while another connection holds the
    file: a worker starting beside another one failed to start."""
    import threading

    (tmp_path / "data").mkdir(mode=0o700)
    path = tmp_path / "data" / FILE_NAME
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE failures (counter TEXT NOT NULL, at REAL NOT NULL)")
    other.execute("BEGIN IMMEDIATE")  # another process is setting the new file up
    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    LoginThrottle(3, 300, data_dir=tmp_path / "data").close()
    other.close()


def test_an_ipv6_guesser_rotating_its_64s_is_stopped_by_its_48():
    """Each /64 of a /48 counted apart: 65 536 networks of fresh tries for one name."""
    throttle = LoginThrottle(3, 300)
    tries = 0
    for n in range(200):
        if throttle.reserve("officer-a", f"2001:db8:7:{n:x}::1") is None:
            break
        tries += 1
    assert tries == 3 * throttle_module.WIDE_FACTOR
    assert throttle.reserve("officer-a", "2001:db8:8::1")  # another site


def test_one_client_is_one_counter_however_its_address_is_written():
    from web.throttle import address_group

    assert {address_group(a) for a in ("[2001:db8::1]:443", "2001:db8::1", "[2001:db8::1]")} == {"2001:db8::/64"}
    assert {address_group(a) for a in ("10.0.0.7:50000", "10.0.0.7", "::ffff:10.0.0.7")} == {"10.0.0.7"}
    throttle = LoginThrottle(2, 300)
    assert throttle.reserve("lan", "10.0.0.7:1") and throttle.reserve("lan", "10.0.0.7:2")
    assert throttle.reserve("lan", "10.0.0.7:3") is None


# -- issue 11: password checks in flight, per name across processes and per process --------------------------
def count_checks_in_flight(monkeypatch, seconds: float) -> dict:
    """Every password check takes ``seconds`` and fails; ``peak[name]`` / ``peak["*"]``: most in flight at once."""
    import threading
    import time

    from storage.access import AuthenticationError
    from web import pages

    lock, now, peak = threading.Lock(), {}, {}

    def check(index, name, password):
        with lock:
            for key in (name, "*"):
                now[key] = now.get(key, 0) + 1
                peak[key] = max(peak.get(key, 0), now[key])
        try:
            time.sleep(seconds)
        finally:
            with lock:
                for key in (name, "*"):
                    now[key] -= 1
        raise AuthenticationError("wrong user name or password")

    monkeypatch.setattr(pages, "authenticate_password", check)
    return peak


async def concurrent_logins(logins: list[tuple[object, str, str]]) -> list[int]:
    """Real concurrent requests against the ASGI apps: (app, name, client address) each, all at once."""
    import asyncio

    import httpx

    async def one(app, name, address):
        transport = httpx.ASGITransport(app=app, client=(address, 50000))
        client = httpx.AsyncClient(transport=transport, base_url="http://portal")
        csrf = re.search(r'name="csrf" value="([^"]+)"', (await client.get("/login")).text).group(1)
        return client, csrf

    clients = await asyncio.gather(*(one(*login) for login in logins))
    try:
        answers = await asyncio.gather(*(client.post("/login", data={"name": name, "password": "wrong-password-1",
                                                                      "csrf": csrf}, follow_redirects=False)
                                         for (client, csrf), (_, name, _) in zip(clients, logins)))
    finally:
        for client, _ in clients:
            await client.aclose()
    return [answer.status_code for answer in answers]


def test_requests_kept_in_flight_for_a_name_never_lock_its_officer_out(portal, monkeypatch):
    """A per-name lease, polled, let requests for ``officer-a`` kept in flight from addresses each under its
    limit answer the officer's own logins "try later" (review H1: 1 check in 10 tries): logins are served
    in their order of arrival, so the officer's password is checked every time."""
    import asyncio

    import httpx

    count_checks_in_flight(monkeypatch, 0.3)
    app = create_app(portal)

    async def main():
        stop = asyncio.Event()

        async def attacker(n: int):  # one request for the name in flight at all times, a new address each
            sent = 0
            while not stop.is_set():
                sent += 1
                transport = httpx.ASGITransport(app=app, client=(f"10.9.{n}.{sent % 250}", 50000))
                async with httpx.AsyncClient(transport=transport, base_url="http://portal") as client:
                    csrf = re.search(r'name="csrf" value="([^"]+)"', (await client.get("/login")).text).group(1)
                    while not stop.is_set() and (await client.post("/login", data={
                            "name": "officer-a", "password": "wrong-password-1", "csrf": csrf})).status_code != 429:
                        pass

        bots = [asyncio.create_task(attacker(n)) for n in range(5)]
        await asyncio.sleep(0.5)
        # the officer's wrong password each time (count_checks_in_flight): from five desks, under the pair limit
        answers = [(await concurrent_logins([(app, "officer-a", f"10.0.1.{n}")]))[0] for n in range(5)]
        stop.set()
        await asyncio.gather(*bots)
        return answers

    assert asyncio.run(main()) == [401] * 5  # checked (the password was wrong), never "try later"


def test_a_flood_beyond_the_waiters_is_refused_at_once_and_spends_its_addresses(portal, monkeypatch):
    """Distinct names (each under every limit) ran one argon2 check each at once: all cores and memory. Now
    MAX_CHECKS run, MAX_WAITERS wait their turn, the rest are told "try later"; such a refusal counts
    against its address (it was released for free: a flood cost nothing), not against its name, in the
    process's memory, in a table of its own (the shared file holds only checked passwords' failures)."""
    import asyncio

    peak = count_checks_in_flight(monkeypatch, 0.6)
    app = create_app(portal)
    served = throttle_module.MAX_CHECKS + throttle_module.MAX_WAITERS
    logins = [(app, f"name-{n}", f"10.2.{n}.1") for n in range(served + 3)]
    answers = asyncio.run(concurrent_logins(logins))
    assert peak["*"] <= throttle_module.MAX_CHECKS
    assert sorted(answers) == [401] * served + [429] * 3
    throttle = app.state.throttle
    for (_, name, address), answer in zip(logins, answers):
        if answer == 429:
            assert throttle._count(throttle._busy, f"addr\x00{address}", 10, throttle.clock()) == 1
            assert throttle._count(throttle._db, f"addr\x00{address}", 10, throttle.clock()) == 0
            assert throttle._count(throttle._memory, f"addr\x00{address}", 10, throttle.clock()) == 0
            for db in (throttle._db, throttle._memory, throttle._busy):
                assert throttle._count(db, f"pair\x00{name}\x00{address}", 10, throttle.clock()) == 0


class RecordedStatements(FailingWrites):
    """A throttle connection that records what it is asked to run (and fails nothing)."""

    def __init__(self, db: sqlite3.Connection):
        super().__init__(db, ())
        self.statements: list[str] = []

    def execute(self, sql: str, *args):
        self.statements.append(sql.lstrip().split(None, 1)[0].upper())
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args):
        self.statements.append(sql.lstrip().split(None, 1)[0].upper())
        return self.db.executemany(sql, *args)


def test_a_refused_login_writes_nothing_to_the_shared_file(portal, monkeypatch):
    """A login over its limit still ran a write transaction on the shared file (BEGIN IMMEDIATE: the write
    lock all the portal's processes wait for), and one refused for want of a check slot wrote its rows there
    and deleted most of them again: a flood of refused logins cost the file a write each."""
    import asyncio

    slow_wrong_passwords(monkeypatch, 0.6)
    app = create_app(portal)
    assert [failed_login(app, "officer-a", "10.3.0.1") for _ in range(3)] == [401] * 3
    throttle = app.state.throttle
    recorded = throttle._db = RecordedStatements(throttle._db)
    assert failed_login(app, "officer-a", "10.3.0.1") == 429  # over the pair's limit
    assert recorded.statements and set(recorded.statements) <= {"SELECT"}, recorded.statements
    served = throttle_module.MAX_CHECKS + throttle_module.MAX_WAITERS
    logins = [(app, f"name-{n}", f"10.4.{n}.1") for n in range(served + 3)]
    recorded.statements.clear()
    answers = asyncio.run(concurrent_logins(logins))
    assert sorted(answers) == [401] * served + [429] * 3
    assert recorded.statements.count("BEGIN") == served  # one write per password checked, none per refusal


def test_check_slots_go_in_order_of_arrival_and_a_cancelled_waiter_keeps_none():
    """A polled slot let a newcomer take it before a login that had waited; a waiter cancelled (its client
    gone) as the slot reached it must pass the slot on, not keep it."""
    import asyncio

    from web.throttle import CheckSlots, LoginBusy

    async def main():
        slots, order = CheckSlots(1, 2), []
        await slots.acquire(1)

        async def login(tag: str):
            await slots.acquire(5)
            order.append(tag)
            slots.release()

        first = asyncio.create_task(login("first"))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(login("gone"))
        await asyncio.sleep(0.05)
        with pytest.raises(LoginBusy):  # two wait already: answered at once
            await slots.acquire(5)
        slots.release()  # to "first" (which hands it on to "gone" when done)
        await first
        await asyncio.sleep(0.05)
        assert order == ["first", "gone"]
        await slots.acquire(1)
        gone = asyncio.create_task(login("gone"))
        await asyncio.sleep(0.05)
        slots.release()  # handed to "gone", which is cancelled before it runs again
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        late = asyncio.create_task(login("late"))
        await asyncio.wait_for(late, 2)  # the slot was not kept by the cancelled waiter
        assert order[:2] == ["first", "gone"] and order[-1] == "late"  # "gone" ran, or passed it on
        await slots.acquire(0.1)  # and it is free again

    asyncio.run(main())


def test_a_flood_of_busy_refusals_never_fills_the_fallback_table(monkeypatch):
    """refused_busy rows shared MAX_ROWS with the in-memory table that counts checked passwords while the
    throttle file fails: a flood from many /64s filled it, and every login was then refused."""
    monkeypatch.setattr(throttle_module, "MAX_ROWS", 40)
    throttle = LoginThrottle(attempts=5, pause=60.0)  # no data dir: the memory table is the only count
    try:
        for n in range(100):
            throttle.refused_busy("anyone", f"2001:db8:{n:x}::1")
        assert throttle.admits("officer", "192.0.2.7") == 0.0
        assert throttle.reserve("officer", "192.0.2.7") is not None
    finally:
        throttle.close()
