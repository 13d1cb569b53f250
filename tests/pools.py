"""Process pools whose workers died while idle (the OOM killer's way), for the tests of what replaces them."""

from __future__ import annotations

import time


def kill_idle_workers(pool) -> None:
    """Start POOL's workers (a concurrent.futures ProcessPoolExecutor), kill them all while they wait for work,
    and return once the pool knows it is broken: no future of it is left to fail."""
    pool.submit(int).result(timeout=120)
    for process in list(pool._processes.values()):
        process.kill()
    deadline = time.monotonic() + 60  # a bound, not a timing: the pool's thread notices at once
    while not pool._broken and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool._broken
