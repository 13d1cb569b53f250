"""web/lanes.py: at most [web] search_lane API searches (and [web] case_lane case views, in a lane of their
own) run at once per process, and the others wait for their turn before taking an archive: searches that wait on the database (held here until released, as on
a slow or remote PostgreSQL) never stall an API case view or a download, even with a small archive pool
(review rev2_dl16 M1: dl16's lane held case views behind searches, and its queued reads held archives).
The app in process, real SQLite index."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from fastapi.testclient import TestClient

from portal_data import AGENCY_A, CASE_A, seed
from storage import access
from storage.archive import Archive
from web.app import create_app
from web.context import ArchivePool

SEARCHES = 12


def client_for(tmp_path, search_lane: int, pool: int | None = None, case_lane: int = 6) -> tuple[TestClient, bytes]:
    settings = seed(tmp_path / "data", tmp_path / "work")
    settings.web.search_lane, settings.web.case_lane = search_lane, case_lane
    with Archive.open(settings) as archive:
        token = access.create_token(archive.index, "onestop-a", "officer", [AGENCY_A])
        pdfa = b"".join(archive.objects.read_chunks(archive.documents(CASE_A)[0].pdfa_key))
    app = create_app(settings)
    if pool is not None:
        app.state.pool = ArchivePool(settings, pool)
    return TestClient(app, base_url="http://127.0.0.1", headers={"authorization": f"Bearer {token}"}), pdfa


@contextlib.contextmanager
def searches_held(client: TestClient, monkeypatch, running: int, method: str = "search",
                  path: str = "/api/v1/search?q=w{}"):
    """SEARCHES API searches (or other reads: ``method`` of the Gate, ``path``) in flight, each held inside
    the database's answer until the block ends; yields once ``running`` of them are inside; then their
    answers' codes and the most inside at once."""
    release, inside, peak, lock, answers = threading.Event(), [0], [0], threading.Lock(), []
    real = getattr(access.Gate, method)

    def held_search(gate, *args, **kwargs):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            release.wait(30)  # a database that answers late (the GIL released, as in a socket's wait)
            return real(gate, *args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(access.Gate, method, held_search)
    threads = [threading.Thread(target=lambda i=i: answers.append(client.get(path.format(i)).status_code))
               for i in range(SEARCHES)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while inside[0] < running:
        assert time.monotonic() < deadline, f"only {inside[0]} searches started"
        time.sleep(0.01)
    time.sleep(0.2)  # the others have reached their wait
    try:
        yield answers, peak
    finally:
        release.set()
        for thread in threads:
            thread.join(30)


def answered_while_held(client: TestClient, path: str, answers: list) -> tuple[int, bytes]:
    """``path``'s answer, which must come while the searches are still held (else: a stall)."""
    got: list = []
    thread = threading.Thread(target=lambda: got.append(client.get(path)))
    thread.start()
    thread.join(10)
    assert got and not answers, f"{path} waited for the held searches"
    return got[0].status_code, got[0].content


def test_a_case_view_and_a_download_are_answered_while_the_search_lane_is_full(tmp_path, monkeypatch):
    """Two searches in the lane, ten waiting for it; an archive pool of 4: queued searches hold no archive,
    and a case view is not in the lane (dl16: both waited for the searches)."""
    client, pdfa = client_for(tmp_path, search_lane=2, pool=4)
    with client, searches_held(client, monkeypatch, running=2) as (answers, peak):
        held = len(client.app.state.pool._all) - client.app.state.pool._free.qsize()
        assert answered_while_held(client, f"/api/v1/cases/{CASE_A}", answers)[0] == 200
        assert answered_while_held(client, f"/api/v1/cases/{CASE_A}/documents/1/pdfa", answers) == (200, pdfa)
        assert peak[0] == 2 and held == 2  # two searches at once, holding two archives; ten wait with none
    assert answers == [200] * SEARCHES and peak[0] == 2


def test_case_views_beyond_their_lane_wait_with_no_archive_and_a_download_passes_them(tmp_path, monkeypatch):
    """Case views have a lane of their own (here 2; pool of 4 archives): the others wait holding none."""
    client, pdfa = client_for(tmp_path, search_lane=6, pool=4, case_lane=2)
    with client, searches_held(client, monkeypatch, running=2, method="case",
                               path=f"/api/v1/cases/{CASE_A}?n={{}}") as (answers, peak):
        held = len(client.app.state.pool._all) - client.app.state.pool._free.qsize()
        assert answered_while_held(client, f"/api/v1/cases/{CASE_A}/documents/1/pdfa", answers) == (200, pdfa)
        assert peak[0] == 2 and held == 2
    assert answers == [200] * SEARCHES and peak[0] == 2


def test_lanes_of_0_are_no_lanes(tmp_path, monkeypatch):
    client, _pdfa = client_for(tmp_path, search_lane=0, case_lane=0)
    with client, searches_held(client, monkeypatch, running=SEARCHES) as (answers, peak):
        assert answered_while_held(client, f"/api/v1/cases/{CASE_A}", answers)[0] == 200
    assert answers == [200] * SEARCHES and peak[0] == SEARCHES


@pytest.mark.parametrize("web, message", [
    ({"search_lane": -1}, r"search_lane must be 0 \(no lane\) to 31"),
    ({"search_lane": 32}, r"search_lane must be 0 \(no lane\) to 31"),
    ({"case_lane": 1000}, r"case_lane must be 0 \(no lane\) to 31"),
    ({"search_lane": 20, "case_lane": 12}, r"search_lane \+ case_lane \+ zip_lane must stay below the 32"),
    ({"zip_lane": 40}, r"zip_lane must be 0 \(no lane\) to 31"),
    ({"search_lane": 15, "case_lane": 15, "zip_lane": 2}, r"15 \+ 15 \+ 2"),
])
def test_lanes_out_of_range_are_one_line_config_errors(tmp_path, web, message):
    from digitize.config import Settings
    from digitize.errors import ConfigError

    settings = Settings(data_dir=str(tmp_path / "data"))
    for key, value in web.items():
        setattr(settings.web, key, value)
    with pytest.raises(ConfigError, match=message) as refused:
        create_app(settings)
    assert "\n" not in str(refused.value)


def test_dossier_zips_take_turns_in_their_lane(tmp_path, monkeypatch):
    """review rev17cli L4: with [web] zip_lane = 1, two ZIPs asked at once are built one after the other."""
    from storage.objects import FolderStore

    settings = seed(tmp_path / "data", tmp_path / "work")
    settings.web.zip_lane = 1
    with Archive.open(settings) as archive:
        token = access.create_token(archive.index, "onestop-a", "officer", [AGENCY_A])
    building, most, lock, real = [0], [0], threading.Lock(), FolderStore.read_chunks
    first_in, release = threading.Event(), threading.Event()

    def counted(self, key):
        with lock:
            building[0] += 1
            most[0] = max(most[0], building[0])
        first_in.set()
        try:
            release.wait(5)  # long enough for the other request to reach the lane (no timing is asserted)
            yield from real(self, key)
        finally:
            with lock:
                building[0] -= 1

    monkeypatch.setattr(FolderStore, "read_chunks", counted)
    with TestClient(create_app(settings), base_url="http://127.0.0.1",
                    headers={"authorization": f"Bearer {token}"}) as client:
        answers: list = []
        threads = [threading.Thread(target=lambda: answers.append(client.get(f"/api/v1/cases/{CASE_A}/dossier.zip")),
                                    daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        assert first_in.wait(20)
        threading.Timer(3.0, release.set).start()
        for t in threads:
            t.join(60)
    assert [a.status_code for a in answers] == [200, 200] and most[0] == 1


def test_a_zip_holds_its_lane_until_its_body_is_sent_or_its_client_is_gone(tmp_path, monkeypatch):
    """review r2cli N5: the lane was released when the endpoint returned, before the body was sent, so finished
    ZIPs of slow clients piled up in TMPDIR however small zip_lane was. Driven at the ASGI level: a
    TestClient reads every body before it returns, so it cannot be a slow client."""
    import tempfile

    import anyio

    from storage.objects import FolderStore

    settings = seed(tmp_path / "data", tmp_path / "work")
    settings.web.zip_lane = 1
    with Archive.open(settings) as archive:
        token = access.create_token(archive.index, "onestop-a", "officer", [AGENCY_A])
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    reads, real = [], FolderStore.read_chunks
    monkeypatch.setattr(FolderStore, "read_chunks", lambda self, key: (reads.append(key), real(self, key))[1])
    app = create_app(settings)
    path = f"/api/v1/cases/{CASE_A}/dossier.zip"
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80),
             "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]}

    def zips_in_tmp() -> int:
        return len(list((tmp_path / "tmp").glob("*/dossier.zip")))

    async def ask(statuses: list, body_reached: anyio.Event | None = None, go: anyio.Event | None = None,
                  gone: bool = False) -> None:
        async def receive():
            await anyio.sleep_forever()

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif message["type"] == "http.response.body" and body_reached is not None:
                body_reached.set()
                if gone:
                    raise OSError("client gone")
                await go.wait()

        with contextlib.suppress(OSError):
            await app({**scope, "state": {}}, receive, send)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            first, second, reached, go = [], [], anyio.Event(), anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask, first, reached, go)
                await reached.wait()  # the first ZIP is built; its client reads nothing yet
                built = len(reads)
                tg.start_soon(ask, second)
                with anyio.move_on_after(3):  # ample for a second build to start, if it could
                    while len(reads) == built:
                        await anyio.sleep(0.05)
                assert len(reads) == built and zips_in_tmp() == 1  # the second waits for the lane
                go.set()
            assert first == second == [200] and len(reads) == 2 * built and zips_in_tmp() == 0
            gone, reached = [], anyio.Event()
            await ask(gone, reached, gone=True)  # a client that leaves mid-body frees its place and its file
            assert gone == [200] and zips_in_tmp() == 0
            third = []
            with anyio.fail_after(30):
                await ask(third)
            assert third == [200]

    anyio.run(main)
