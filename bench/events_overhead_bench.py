"""CPU that web/events.py (and the gate's event recording) costs per portal request, this tree against a base
revision, side by side in one run (on demand, never in CI; quick: about rounds × 2 × seconds).

    .venv/bin/python bench/events_overhead_bench.py [--mode path|served] [--base main] [--clients 50] [--events 1]
                                                    [--seconds 2] [--rounds 5]

Each variant loads its own copies of ``storage/access.py`` and ``web/events.py`` (the base's from
``git show BASE:…``) and serves ``--clients`` concurrent fake requests on one event loop, as the portal
does: a request makes a RequestEvents, records ``--events`` access events through a Gate
(``Gate.record`` → sink → ``EventWriter.submit``) and awaits their commit (``RequestEvents.committed``)
before its answer. The writer thread commits to an index whose ``add_events`` does nothing, so what is
measured is the Python of the path, not SQLite (``--mode served``); ``--mode path`` (the default) leaves
out the writer thread and marks each batch committed by hand, so the CPU per request does not move with
how the machine's load groups requests into batches. Reported per variant: process CPU (all threads:
getrusage via time.process_time) per request, median over rounds, the ratio of the medians to the base's
and the median of each round's ratio (paired: the two ran back to back). Variants alternate within each
round, so a loaded machine slows them alike: compare the ratios, not the µs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load(name: str, path: Path, package: str):
    spec = importlib.util.spec_from_file_location(f"{package}.{name}", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def variant(tag: str, access_src: str, events_src: str, work: Path):
    """(Gate class, events module) of one revision; web/events.py's ``storage.access`` is that revision's."""
    (work / f"access_{tag}.py").write_text(access_src)
    access = load(f"_bench_access_{tag}", work / f"access_{tag}.py", "storage")
    saved = sys.modules.get("storage.access")
    sys.modules["storage.access"] = access  # what this revision's web/events.py imports
    try:
        (work / f"events_{tag}.py").write_text(events_src)
        events = load(f"_bench_events_{tag}", work / f"events_{tag}.py", "web")
    finally:
        if saved is not None:
            sys.modules["storage.access"] = saved
    return access, events


class NullIndex:
    def add_events(self, events) -> None:
        pass

    def close(self) -> None:
        pass


def run(access, events, clients: int, per_request: int, seconds: float) -> tuple[float, int]:
    """CPU seconds per request and requests served in ``seconds``."""
    writer = events.EventWriter(NullIndex)
    writer.start()
    principal = access.Principal("bench", "officer", ("000.00.31.H56",), "token")
    gate_cls = access.Gate
    served = 0

    async def client(stop: float) -> None:
        nonlocal served
        while time.monotonic() < stop:
            sink = events.RequestEvents(writer)
            gate = gate_cls(archive=None, principal=principal, client="10.0.0.1")
            gate.sink = sink
            for i in range(per_request):
                gate.record("retrieved", f"downloaded pdfa of document {i + 1}", case_id="000.00.31.H56-241015-0027")
            await sink.committed()
            served += 1

    async def main() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(client(stop) for _ in range(clients)))

    cpu = time.process_time()
    asyncio.run(main())
    cpu = time.process_time() - cpu
    writer.close()
    return cpu / max(served, 1), served


def path(access, events, clients: int, per_request: int, seconds: float) -> tuple[float, int]:
    """The same path without the writer thread and the loop's scheduling (whose batching, and so CPU per
    request, shifts with the machine's load): each request's batch is marked committed by hand, as the
    writer would, and ``committed`` finds it done. CPU seconds per request and requests made."""
    import threading

    writer = events.EventWriter(NullIndex)
    writer._thread = threading.current_thread()  # "running" for submit, nothing consumes the queue
    writer._running = True  # (this tree's flag; the base has none)
    principal = access.Principal("bench", "officer", ("000.00.31.H56",), "token")
    gate_cls, batch_cls = access.Gate, events._Batch
    served = 0

    async def requests(stop: float) -> None:
        nonlocal served
        while time.monotonic() < stop:
            for _ in range(200):
                sink = events.RequestEvents(writer)
                gate = gate_cls(archive=None, principal=principal, client="10.0.0.1")
                gate.sink = sink
                for i in range(per_request):
                    gate.record("retrieved", f"downloaded pdfa of document {i + 1}",
                                case_id="000.00.31.H56-241015-0027")
                batch, writer._batch = writer._batch, batch_cls(writer._lock)  # what the writer does
                writer._committing, batch.done = batch, True
                await sink.committed()
            served += 200

    cpu = time.process_time()
    asyncio.run(requests(time.monotonic() + seconds))
    return (time.process_time() - cpu) / max(served, 1), served


MODES = {"served": run, "path": path}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with (default main)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--events", type=int, default=1, help="access events per request")
    parser.add_argument("--seconds", type=float, default=2.0, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", choices=sorted(MODES), default="path",
                        help="path: the code's own CPU, deterministic (default); served: with the writer "
                             "thread and concurrent clients (batching shifts with load: noisier)")
    args = parser.parse_args()
    measure = MODES[args.mode]

    def show(rev: str, path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True,
                              text=True).stdout

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        variants = {f"base ({args.base})": variant("base", show(args.base, "storage/access.py"),
                                                    show(args.base, "web/events.py"), work),
                    "this tree": variant("tree", (ROOT / "storage/access.py").read_text(),
                                         (ROOT / "web/events.py").read_text(), work)}
        per: dict[str, list[float]] = {name: [] for name in variants}
        count: dict[str, int] = {name: 0 for name in variants}
        for name in variants:  # warm-up, not counted (first loop, first threads)
            measure(*variants[name], args.clients, args.events, min(args.seconds, 0.5))
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                cpu, served = measure(*variants[name], args.clients, args.events, args.seconds)
                per[name].append(cpu)
                count[name] += served
    base_runs = per[next(iter(variants))]
    base = statistics.median(base_runs)
    print(f"{'variant':<16} {'CPU µs/request (median)':>24} {'min':>8} {'max':>8} {'requests':>9} {'ratio':>7} "
          f"{'paired ratio':>13} {'ratio of mins':>14}")
    for name, values in per.items():
        med = statistics.median(values)
        paired = statistics.median(v / b for v, b in zip(values, base_runs))  # same round: same load
        print(f"{name:<16} {med * 1e6:>24.1f} {min(values) * 1e6:>8.1f} {max(values) * 1e6:>8.1f} "
              f"{count[name]:>9} {med / base:>7.3f} {paired:>13.3f} {min(values) / min(base_runs):>14.3f}")
    print("(on a loaded machine the minimum, the run least disturbed, is the steadiest estimate)")
    print(f"\nmode {args.mode}, {args.events} event(s) per request"
          + (f", {args.clients} clients" if args.mode == "served" else "")
          + f", {args.rounds} rounds × {args.seconds:g} s per variant, alternated; the index commits nothing "
          "(the path's Python only)")
    print("command:", shlex.join([sys.executable, *sys.argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
