"""CPU per request of running each request in a child task (web/app.py ThreadsFinishFirst), in process (on
demand, never CI). Two tables:

1. a trivial ASGI app called bare, through ThreadsFinishFirst, through an anyio task group (the other way to
   make a cancelled request wait for its worker thread) and through a bare asyncio task;
2. the real app (create_app, its lifespan, event writer and pool) answering ``GET /api/v1/cases/ID`` with a
   cached officer token, built with and without ThreadsFinishFirst: what the change costs a case view.

    .venv/bin/python bench/request_task_bench.py [--calls 20000] [--requests 400] [--rounds 5]

Variants alternate round by round (drifting load hits all alike); the figure is the median of the rounds'
process CPU (all threads) per request. Read the differences or ratios between rows taken in one run, not the
absolute numbers. Prints markdown tables and the command. The app's data dir (one case record, a token) is
made in a temp dir each run: seconds, nothing worth caching.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402

from web.app import ThreadsFinishFirst  # noqa: E402


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def send(message):
    pass


async def receive():
    return {"type": "http.request"}


class TaskGroup:
    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        async with anyio.create_task_group() as group:
            group.start_soon(self.inner, scope, receive, send)


class BareTask:
    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        await asyncio.get_running_loop().create_task(self.inner(scope, receive, send))


async def cpu_per_call(wrapped, calls: int) -> float:
    scope = {"type": "http", "path": "/api/v1/x"}
    began = time.process_time()
    for _ in range(calls):
        await wrapped(scope, receive, send)
    return (time.process_time() - began) / calls * 1e6


async def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    variants = {"bare app": app, "ThreadsFinishFirst (child task + anyio CancelScope)": ThreadsFinishFirst(app),
                "anyio task group": TaskGroup(app), "bare asyncio task (no cancel handling)": BareTask(app)}
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, wrapped in variants.items():
            results[name].append(await cpu_per_call(wrapped, calls))
    return results


CASE = "000.00.31.H56-241015-0027"


def real_apps(folder: Path):
    """(token, {name: app}): the same data dir served with and without ThreadsFinishFirst."""
    from digitize.config import Settings
    from storage import access
    from storage.archive import Archive
    from storage.models import CaseRecord
    from web.app import create_app

    settings = Settings(data_dir=str(folder / "data"))
    with Archive.open(settings) as archive:
        archive.index.upsert_case(CaseRecord(CASE))
        token = access.create_token(archive.index, "bench", "officer", ["000.00.31.H56"])
    with_it, without = create_app(settings), create_app(settings)
    without.user_middleware = [m for m in without.user_middleware if m.cls is not ThreadsFinishFirst]
    assert len(without.user_middleware) == len(with_it.user_middleware) - 1
    return token, {"app with ThreadsFinishFirst": with_it, "app without it": without}


async def case_views(app, token: str, requests: int) -> float:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": f"/api/v1/cases/{CASE}", "raw_path": b"", "query_string": b"", "root_path": "",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"authorization", f"Bearer {token}".encode()), (b"host", b"127.0.0.1")]}
    statuses = []

    async def collect(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    began = time.process_time()
    for _ in range(requests):
        await app(dict(scope), receive, collect)
    spent = time.process_time() - began
    assert set(statuses) == {200}, set(statuses)
    return spent / requests * 1e6


async def measure_apps(requests: int, rounds: int) -> dict[str, list[float]]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        token, apps = real_apps(Path(folder))
        async with contextlib.AsyncExitStack() as stack:
            for app in apps.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
            for app in apps.values():
                await case_views(app, token, 20)  # warm: pools opened, token cached
            results: dict[str, list[float]] = {name: [] for name in apps}
            for _ in range(rounds):
                for name, app in apps.items():
                    results[name].append(await case_views(app, token, requests))
    return results


def table(results: dict[str, list[float]], what: str) -> None:
    print(f"| {what} | CPU us per request (median of rounds) | rounds |")
    print("|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="trivial-app calls per variant and round")
    parser.add_argument("--requests", type=int, default=400, help="case views per app and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    table(asyncio.run(measure(args.calls, args.rounds)), "wrapper of a trivial app")
    apps = asyncio.run(measure_apps(args.requests, args.rounds))
    table(apps, "GET /api/v1/cases/ID (cached token)")
    (a, with_it), (_, without) = apps.items()
    print(f"case view: with / without CPU per request = {statistics.median(with_it) / statistics.median(without):.3f}")
    print()
    print("command: python " + shlex.join(["bench/request_task_bench.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
