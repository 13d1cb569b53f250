"""Access-event commit benchmark (on demand, never in CI): what a portal request waits for its event.

    .venv/bin/python bench/events_bench.py [--processes 2] [--threads 12] [--seconds 8] [--rounds 2]

Like ``digitize serve`` (one web/events.py EventWriter per server process, one SQLite index), it starts
``--processes`` processes, each with ``--threads`` request threads that add one access event after
another and wait for its commit, and reports per variant the events committed per second, the commits
(events per commit) and the p50/p95/max wait of one add(): the latency a view or download gains from
being recorded durably before its answer. Variants, alternated ``--rounds`` times in one run (so a
loaded machine slows them alike; compare them with each other, not with other runs):

* ``group commit, FULL``: as served (synchronous = FULL: the WAL fsynced at every commit; the
  processes' writers meet at SQLite's write lock, whose busy handler sleeps 1, 2, 5 … ms between tries);
* ``BEGIN/INSERT/COMMIT as 3 calls``: the generic Index.add_events (the GIL is taken back between the
  statements while the write lock is held) instead of SqliteIndex's one autocommit statement;
* ``turn lock``: an exclusive flock on a file beside the index around each commit, so the processes'
  writers queue in the kernel (tried and dropped: the holder waits for the GIL while holding it);
* ``NORMAL``: synchronous = NORMAL (no fsync at commit: an event survives a killed process, not a
  power loss): what durability costs.

``--busy`` threads per process run Python meanwhile, as a server's other requests do (they compete for
the GIL with the writer).

Nothing is cached; a run takes about rounds × 4 × (seconds + 2) s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {"group commit, FULL (as served)": ("FULL", False, True),
            "FULL, BEGIN/INSERT/COMMIT as 3 calls": ("FULL", False, False),
            "FULL, turn lock (flock) around commits": ("FULL", True, True),
            "NORMAL (no fsync)": ("NORMAL", False, True)}


def worker(dsn: str, sync: str, turn_lock: bool, one_statement: bool, threads: int, busy: int, seconds: float,
           out) -> None:
    import fcntl

    from storage.index import Index, open_index
    from storage.index_sqlite import SqliteIndex
    from storage.models import Event
    from web import events

    if not one_statement:
        SqliteIndex.add_events = Index.add_events

    def open_for_events():
        index = open_index(dsn, False, 10)
        index.conn.execute(f"PRAGMA synchronous = {sync}")
        return index

    if turn_lock:
        real_add = SqliteIndex.add_events

        def add_with_turn(self, batch):
            fd = os.open(self.where + ".events-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                real_add(self, batch)
            finally:
                os.close(fd)

        SqliteIndex.add_events = add_with_turn
    writer = events.EventWriter(open_for_events)
    writer.start()
    waits: list[float] = []
    stop = time.monotonic() + seconds

    def requests(n: int) -> None:
        mine = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            writer.add(Event("retrieved", "success", f"token:bench{n}", "digitize portal", detail="downloaded pdfa",
                             case_id="000.00.31.H56-241015-9999", client="127.0.0.1"))
            mine.append(time.perf_counter() - t)
        waits.extend(mine)

    def spin() -> None:  # a request's Python work (pages, JSON): threads that want the GIL
        while time.monotonic() < stop:
            sum(i * i for i in range(2000))

    pool = [threading.Thread(target=requests, args=(n,)) for n in range(threads)]
    pool += [threading.Thread(target=spin) for _ in range(busy)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    writer.close()
    out.send((waits, writer.commits))


def run(variant: str, args, folder: Path) -> dict:
    from storage.index import open_index

    sync, turn_lock, one_statement = VARIANTS[variant]
    dsn = "sqlite:///" + str(folder / f"index-{time.monotonic_ns()}.sqlite3")
    open_index(dsn).close()
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for _ in range(args.processes):
        here, there = ctx.Pipe()
        p = ctx.Process(target=worker, args=(dsn, sync, turn_lock, one_statement, args.threads, args.busy,
                                                   args.seconds, there))
        p.start()
        pipes.append(here)
        procs.append(p)
    waits, commits = [], 0
    for here in pipes:
        w, c = here.recv()
        waits += w
        commits += c
    for p in procs:
        p.join()
    waits.sort()
    pick = lambda q: 1000 * waits[min(len(waits) - 1, int(q * len(waits)))]  # noqa: E731
    return {"events/s": len(waits) / args.seconds, "events/commit": len(waits) / max(commits, 1),
            "p50 ms": pick(0.5), "p95 ms": pick(0.95), "max ms": 1000 * waits[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2, help="server processes (digitize serve: one per core)")
    parser.add_argument("--threads", type=int, default=12, help="concurrent requests per process")
    parser.add_argument("--busy", type=int, default=2, help="threads per process running Python meanwhile (GIL)")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="digitize-events-bench-", dir=Path.home()) as tmp:  # a real disk
        for r in range(args.rounds):
            for variant in VARIANTS:
                results[variant].append(run(variant, args, Path(tmp)))
                print(f"round {r + 1} {variant}: {results[variant][-1]}", file=sys.stderr)
    print(f"\n$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{args.processes} processes × {args.threads} request threads + {args.busy} busy ones, {args.seconds:g} s "
          f"per run, {args.rounds} "
          f"rounds alternated, load average before {load:.1f}; medians over rounds\n")
    print("| variant | events/s | events per commit | add() p50 ms | p95 ms | max ms |\n|---|---|---|---|---|---|")
    for variant, rows in results.items():
        med = {k: sorted(x[k] for x in rows)[len(rows) // 2] for k in rows[0]}
        print(f"| {variant} | {med['events/s']:.0f} | {med['events/commit']:.1f} | {med['p50 ms']:.1f} | "
              f"{med['p95 ms']:.1f} | {med['max ms']:.0f} |")


if __name__ == "__main__":
    main()
