"""The API's lanes: at most ``[web] search_lane`` searches and ``[web] case_lane`` case views run at once per
server process; the others wait for their turn on the event loop, before taking an archive, holding no
thread and no archive.

Every sync route runs in a worker thread (anyio's pool, 40 threads), and all of those take turns on the
process's one GIL. Under 50 clients that never pause, a 500 KB download (~0.5 ms of CPU in its route)
waited tens of ms there behind searches, the portal's heaviest reads (bench/portal_phases.py); search had
the slack against issue 11's targets (search p95 150 ms, downloads 100 ms). The lane trades search latency
for everyone else's when the server is saturated; with fewer searches than the lane in flight nothing waits.

Searches have a lane of their own: their cost is unbounded (a query of 500 characters, an offset up to
10 000; on PostgreSQL, a slow or remote server, a cold page cache, time spent waiting on the database
rather than on the GIL). API case views have another (``[web] case_lane``), so they never queue behind
searches (review rev2_dl16 M1: in dl16's shared read lane, 12 searches that each waited 1 s on the
database held an API case view 1.9 s) and still do not flood the GIL that downloads need (out of any lane,
downloads' p95 was 1.28x and searches' 1.49x dl16's under load; in a lane of their own, 0.67x and 0.70x
the no-lane tree: README, Benchmarks: Portal). The turn is taken BEFORE the archive (:func:`search_gate`,
:func:`case_gate`): a request waiting for its lane holds no archive, so however many wait, the pool's 32
archives per process stay for the other requests; at most ``search_lane + case_lane`` archives are held
by them (the settings are checked to stay below the pool). A lane of 0: none (those requests share the
pool's threads like every other route).
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Callable

import anyio
from fastapi import Request

from storage.access import Gate

def install(state, search: int, case: int, zips: int = 0) -> None:
    """On the server's event loop (the app's lifespan): the lanes' limiters, bound to that loop (None: no lane)."""
    state.search_lane = anyio.CapacityLimiter(search) if search > 0 else None
    state.case_lane = anyio.CapacityLimiter(case) if case > 0 else None
    state.zip_lane = anyio.CapacityLimiter(zips) if zips > 0 else None


class Turn:
    """A place held in a lane on behalf of one request (``holder``), released once."""

    def __init__(self, lane: anyio.CapacityLimiter | None):
        self.lane, self.holder, self.kept = lane, object(), False

    def keep(self) -> Callable[[], None]:
        """Hold the place past the dependency's end (its release now the caller's: call what this returns,
        on the event loop). A ZIP holds it until its body is sent (review r2cli N5: a lane released when the
        endpoint returned bounded the builds, not the finished ZIPs in TMPDIR waiting for slow clients)."""
        self.kept = True
        return self.release

    def release(self) -> None:
        lane, self.lane = self.lane, None
        if lane is not None:
            lane.release_on_behalf_of(self.holder)


@contextlib.asynccontextmanager
async def turn(request: Request, name: str) -> AsyncIterator[Turn]:
    """Wait on the event loop for a place in the lane ``name`` and hold it (no lane before the app's lifespan
    ran, or with a size of 0). The place is held on behalf of this call, not of a task: FastAPI may
    enter and leave a dependency in different tasks. Released on the way out unless kept (Turn.keep)."""
    held = Turn(getattr(request.app.state, name, None))
    if held.lane is None:
        yield held
        return
    await held.lane.acquire_on_behalf_of(held.holder)  # cancelled while waiting: nothing taken
    try:
        yield held
    finally:
        if not held.kept:
            held.release()


def keep_turn(request: Request) -> Callable[[], None]:
    """The request's lane place kept past its dependency (Turn.keep); what releases it (a no-op without one)."""
    held = getattr(request.state, "turn", None)
    return held.keep() if held is not None else (lambda: None)


@contextlib.asynccontextmanager
async def _gate_in(request: Request, lane: str, pages: bool = False) -> AsyncIterator[Gate]:
    """Its turn in ``lane`` first, then an archive (web/app.py api_gate, or page_gate for the pages)."""
    from .app import api_gate, page_gate

    async with turn(request, lane) as held:
        request.state.turn = held
        async with contextlib.asynccontextmanager(page_gate if pages else api_gate)(request) as gate:
            yield gate


async def search_gate(request: Request) -> AsyncIterator[Gate]:
    """The access dependency of API searches (the search lane)."""
    async with _gate_in(request, "search_lane") as gate:
        yield gate


async def case_gate(request: Request) -> AsyncIterator[Gate]:
    """The access dependency of API case views (the case lane)."""
    async with _gate_in(request, "case_lane") as gate:
        yield gate


async def zip_gate(request: Request) -> AsyncIterator[Gate]:
    """The access dependency of the API's dossier ZIP (the ZIP lane: review rev17cli L4, parallel ZIPs of
    large dossiers filled the temp folder the watcher also needs)."""
    async with _gate_in(request, "zip_lane") as gate:
        yield gate


async def zip_page_gate(request: Request) -> AsyncIterator[Gate]:
    """The pages' dossier ZIP, in the same lane."""
    async with _gate_in(request, "zip_lane", pages=True) as gate:
        yield gate
