"""Queue ledger sealing benchmark (on demand, never in CI): what signing the ledger's records costs the
waiter (`batch --wait`), `queue status` and the workers' writes, side by side with the unsealed reads and
writes of before (re-created here on the same Redis), so the ratios hold on a loaded machine.

    .venv/bin/python bench/ledger_seal_bench.py [--jobs 20000] [--polls 2000]

Starts its own redis-server (tests/servers.py) in a temp dir, fills it with JOBS records (half done with a
~1 KB result), and prints a markdown table of this client's CPU time (time.process_time) and wall time per
operation. Redis's own CPU is not counted. The metrics rows: a Prometheus scrape's verified counts
(Ledger.follow: the first scrape reads every record, later ones only those in the change log since) against the bare set sizes of before.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.ledger import ENDS, STATES, TERMINAL, Ledger, LiveTally  # noqa: E402
from tests.servers import start_redis  # noqa: E402

KEY = b"bench-queue-secret-0123456789-abcdefgh"
RESULT = {"path": "a/scan.pdf", "status": "done", "sha256": "ab" * 32, "reason": "", "pages": 3,
          "documents": [{"case_id": "000.00.31.H56-241015-0027", "doc_id": str(n), "title": "Đơn đề nghị " * 4,
                         "sequence": n, "pages": 3, "shared": False} for n in range(4)]}


def measure(fn, repeat: int = 1) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.process_time() - cpu) / repeat, (time.perf_counter() - wall) / repeat


def unsealed_write(ledger: Ledger, job: str, state: str, **fields) -> None:
    """The write of before: one MULTI/EXEC, no WATCH, no seal."""
    pipe = ledger.redis.pipeline()
    ledger._move(pipe, job, state, time.time(), **fields)
    pipe.incr(ENDS)
    pipe.execute()


def unsealed_outcomes(ledger: Ledger, jobs: list[str]) -> dict:
    pipe = ledger.redis.pipeline(transaction=False)
    for job in jobs:
        pipe.hmget(ledger._job(job), "state", "result")
    return {job: (s, json.loads(r or "{}")) for job, (s, r) in zip(jobs, pipe.execute()) if s in TERMINAL}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--polls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        server = start_redis(Path(tmp) / "redis")
        ledger = Ledger(server.url, KEY)
        try:
            rows = run(ledger, args.jobs, args.polls)
        finally:
            ledger.close()
            server.stop()
    print(f"\n`python bench/ledger_seal_bench.py --jobs {args.jobs} --polls {args.polls}` "
          "(client CPU and wall per operation; Redis's own CPU not counted)\n")
    print("| operation | sealed CPU ms | sealed wall ms | unsealed CPU ms | unsealed wall ms | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (cpu, wall), (ucpu, uwall) in rows:
        ratio = f"{cpu / ucpu:.2f}x" if ucpu else "-"
        print(f"| {name} | {cpu * 1e3:.3f} | {wall * 1e3:.3f} | {ucpu * 1e3:.3f} | {uwall * 1e3:.3f} | {ratio} |")


def run(ledger: Ledger, count: int, polls: int) -> list:
    spec = {"job": "", "key": "_staging/" + "ab" * 32, "sha256": "ab" * 32, "name": "a/scan.pdf", "options": {}}
    jobs = [f"{n:032x}" for n in range(count)]
    sample = jobs[:500]
    write = measure(lambda: [ledger.enqueued(j, "a/scan.pdf", "ab" * 32, dict(spec, job=j)) for j in sample])
    unsealed = measure(lambda: [unsealed_write(ledger, j, "waiting", name="a/scan.pdf", sha256="ab" * 32,
                                               spec=json.dumps(dict(spec, job=j)), result="") for j in sample])
    rows = [("enqueue (per job)", (write[0] / 500, write[1] / 500), (unsealed[0] / 500, unsealed[1] / 500))]
    for job in jobs:  # every record (re)written sealed, as the ledger writes it
        ledger.enqueued(job, "a/scan.pdf", "ab" * 32, dict(spec, job=job))
    done = jobs[: count // 2]
    sealed_end = measure(lambda: [ledger.end(j, "done", "", RESULT) for j in done[:500]])
    plain_end = measure(lambda: [unsealed_write(ledger, j, "done", reason="", result=json.dumps(RESULT))
                                 for j in done[500:1000]])
    rows.append(("end done (per job)", (sealed_end[0] / 500, sealed_end[1] / 500),
                 (plain_end[0] / 500, plain_end[1] / 500)))
    for job in done[500:]:
        ledger.end(job, "done", "", RESULT)
    rows.append(("batch --wait poll: ends()", measure(ledger.ends, polls), measure(ledger.ends, polls)))
    rows.append((f"outcomes of {count} pending ({count // 2} ended)", measure(lambda: ledger.outcomes(jobs)),
                 measure(lambda: unsealed_outcomes(ledger, jobs))))
    rows.append((f"queue status counts, {count} jobs: tally() vs counts()", measure(ledger.tally),
                 measure(ledger.counts)))
    # the Prometheus gauges (pipelines/metrics.py): verified counts kept up to date from the ledger's change log
    # (Ledger.follow), against the unverified set sizes they were before
    live = LiveTally()
    rows.append((f"metrics scrape, {count} jobs, first (reads all): follow() vs counts()",
                 measure(lambda: ledger.follow(live)), measure(ledger.counts)))
    rows.append((f"metrics scrape, {count} jobs, none written since: follow() vs counts()",
                 measure(lambda: ledger.follow(live), 20), measure(ledger.counts, 20)))
    for job in jobs[-100:]:
        ledger.start(job, "w")
    rows.append((f"metrics scrape, {count} jobs, 100 written since: follow() vs counts()",
                 measure(lambda: ledger.follow(live)), measure(ledger.counts)))
    assert ledger.follow(live) == replace(ledger.tally(), oldest_waiting=None)
    assert ledger.tally().done == count // 2 and all(s in STATES for s, _ in ledger.outcomes(done).values())
    return rows


if __name__ == "__main__":
    main()
