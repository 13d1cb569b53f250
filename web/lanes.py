"""A latency class at the thread pool: the API's case views and searches share a small lane of threads,
so that a download (and every other hop) does not queue behind them for the GIL.

Every sync route runs in a worker thread (anyio's pool, 40 threads). Under 50 clients that never pause,
~25 requests per server process are in flight, and all of those in a thread take turns on the process's
one GIL: a 500 KB download, ~0.5 ms of CPU in its route, waited tens of ms for a thread and the GIL there
and to get back (bench/portal_phases.py). Case views and searches (READ_THREADS at a time per process) wait
for their turn on the event loop instead, holding no thread and taking no share of the GIL; downloads, the
access dependency's hop, uploads and the pages keep the shared pool.

This trades search and case-view latency for download latency when the server is saturated: issue 11's
targets give search p95 150 ms and downloads 100 ms, and search had the slack. With fewer than
READ_THREADS of them in flight (a server not saturated) nothing waits. They wait with their archive in
hand (taken by the access dependency), and never for another one, so the lane cannot hold threads that
archive holders need (the pool's 32 per process stay above the ~25 requests a busy process keeps). Far
beyond that (over 32 requests in flight per process), reads queued in the lane would hold most archives
and a download would wait for one of them on the loop: the priority would turn around there.
"""

from __future__ import annotations

from functools import partial

import anyio
import anyio.to_thread

READ_THREADS = 6  # per server process: case views and searches of the API in worker threads at once


def install(state) -> None:
    """On the server's event loop (the app's lifespan): the lane's limiter, bound to that loop."""
    state.read_lane = anyio.CapacityLimiter(READ_THREADS)


async def read(request, func, *args):
    """``func(*args)`` in a worker thread, once the read lane has room (the shared pool's limit alone if
    the app's lifespan has not run)."""
    return await anyio.to_thread.run_sync(partial(func, *args), limiter=getattr(request.app.state, "read_lane",
                                                                                  None))
