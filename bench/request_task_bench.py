"""CPU per request of running each request in a child task (web/app.py ThreadsFinishFirst), in process (on
demand, never CI): a trivial ASGI app called bare, through ThreadsFinishFirst, through an anyio task group
(the other way to make a cancelled request wait for its worker thread) and through a bare asyncio task.

    .venv/bin/python bench/request_task_bench.py [--calls 20000] [--rounds 5]

Variants alternate round by round (drifting load hits all alike); the figure is the median of the rounds'
process CPU per call. Read the differences between rows, not the absolute numbers. Prints a markdown table
and the command. No fixture (nothing to cache).
"""

from __future__ import annotations

import argparse
import asyncio
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(measure(args.calls, args.rounds))
    print("| wrapper | CPU us per request (median of rounds) | rounds |")
    print("|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    print()
    print("command: python " + shlex.join(["bench/request_task_bench.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
