"""The search lane: at most ``[web] search_lane`` API searches run at once per server process; the others
wait for their turn on the event loop, before taking an archive, holding no thread and no archive.

Every sync route runs in a worker thread (anyio's pool, 40 threads), and all of those take turns on the
process's one GIL. Under 50 clients that never pause, a 500 KB download (~0.5 ms of CPU in its route)
waited tens of ms there behind searches, the portal's heaviest reads (bench/portal_phases.py); search had
the slack against issue 11's targets (search p95 150 ms, downloads 100 ms). The lane trades search latency
for everyone else's when the server is saturated; with fewer searches than the lane in flight nothing waits.

Only searches: their cost is unbounded (a query of 500 characters, an offset up to 10 000; on PostgreSQL,
a slow or remote server, a cold page cache, time spent waiting on the database rather than on the GIL).
Case views are cheap and bounded, so they do not queue behind searches (review rev2_dl16 M1: with case
views in the lane, 12 searches that each waited 1 s on the database held an API case view 1.9 s). The turn
is taken BEFORE the archive (:func:`search_gate`): a search waiting for the lane holds no archive, so
however many wait, the pool's 32 archives per process stay for the other requests; at most
``search_lane`` archives are held by searches (the setting is checked to stay below the pool).
``search_lane = 0``: no lane (searches share the pool's threads like every other route).
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

import anyio
from fastapi import Request

from storage.access import Gate

def install(state, size: int) -> None:
    """On the server's event loop (the app's lifespan): the lane's limiter, bound to that loop (None: no lane)."""
    state.search_lane = anyio.CapacityLimiter(size) if size > 0 else None


@contextlib.asynccontextmanager
async def turn(request: Request) -> AsyncIterator[None]:
    """Wait on the event loop for a place in the search lane and hold it (no lane before the app's lifespan
    ran, or with search_lane = 0). The place is held on behalf of this call, not of a task: FastAPI may
    enter and leave a dependency in different tasks."""
    lane = getattr(request.app.state, "search_lane", None)
    if lane is None:
        yield
        return
    holder = object()
    await lane.acquire_on_behalf_of(holder)  # cancelled while waiting: nothing taken
    try:
        yield
    finally:
        lane.release_on_behalf_of(holder)


async def search_gate(request: Request) -> AsyncIterator[Gate]:
    """The access dependency of API searches: its turn in the lane first, then an archive (web/app.py api_gate)."""
    from .app import api_gate

    async with turn(request):
        async with contextlib.asynccontextmanager(api_gate)(request) as gate:
            yield gate
