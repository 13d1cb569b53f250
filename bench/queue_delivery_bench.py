#!/usr/bin/env python3
"""Queue delivery bookkeeping benchmark (on demand, not in CI): the CPU a worker spends on one delivery
besides its conversion (pipelines.queued.run_job: ledger reads and sealed writes, the lease and its renewal
thread, the fetch of a small staged original, the staging delete), this tree against another (default
/work/main), in alternated child processes so a busy machine weighs on both alike.

Starts its own Redis on loopback (tests/servers.py); a folder store and a stand-in conversion. Prints CPU ms
and wall ms per delivery per round, and the median of each side's rounds.

    .venv/bin/python bench/queue_delivery_bench.py                    # ~20 s
    .venv/bin/python bench/queue_delivery_bench.py --other /path/to/tree --deliveries 500 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

CHILD = r'''
import hashlib, resource, sys, tempfile, time
from pathlib import Path
from types import SimpleNamespace
import pipelines.queued as queued
from digitize.config import Settings
from pipelines.jobs import JobResult, Status
from pipelines.ledger import Ledger, job_id
from storage.objects import FolderStore
url, n = sys.argv[1], int(sys.argv[2])
tmp = Path(tempfile.mkdtemp(prefix="digitize-delivery-bench-"))
data = b"%PDF-1.4 staged original\n" * 400
sha = hashlib.sha256(data).hexdigest()
src = tmp / "in.pdf"
src.write_bytes(data)
objects = FolderStore(tmp / "objects")
queued.archive_for = lambda settings: SimpleNamespace(objects=objects)
settings = Settings(data_dir=str(tmp / "data"))
ledger = Ledger(url, b"bench-queue-secret-0123456789-abcdefgh")
process = lambda path, s, hint, **kw: JobResult(str(path), Status.done, sha, "")
specs = []
for i in range(n):
    job = job_id(sha, "", {"i": i, "t": time.time_ns()})
    key = f"_staging/{sha}/{job}"
    objects.put(key, src, sha)
    spec = {"job": job, "key": key, "sha256": sha, "name": "case/a.pdf", "options": {}, "run": "1" * 32}
    ledger.enqueued(job, "case/a.pdf", sha, spec)
    specs.append(spec)
before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for spec in specs:
    assert queued.run_job(settings, ledger, spec["job"], spec, "bench@host/1", 0, process=process).state == "done"
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
print(f"{cpu / n * 1000:.3f} {(time.perf_counter() - started) / n * 1000:.3f}")
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", default="/work/main", help="the tree to compare with (its pipelines/)")
    parser.add_argument("--deliveries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE / "tests"))
    from servers import start_redis

    redis = start_redis(Path(tempfile.mkdtemp(prefix="digitize-delivery-bench-redis-")))
    trees = {"this": str(HERE), "other": str(Path(args.other).resolve())}
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    print(f"{'round':>5} {'tree':<6} {'CPU ms/delivery':>16} {'wall ms/delivery':>17}")
    try:
        for n in range(args.rounds):
            for name, tree in (trees.items() if n % 2 == 0 else reversed(trees.items())):
                out = subprocess.run([sys.executable, "-c", CHILD, redis.url, str(args.deliveries)], cwd=tree,
                                     env=dict(os.environ, PYTHONPATH=tree), capture_output=True, text=True,
                                     check=True)
                cpu, wall = map(float, out.stdout.split())
                seen[name].append((cpu, wall))
                print(f"{n:>5} {name:<6} {cpu:>16.3f} {wall:>17.3f}")
    finally:
        redis.stop()
    for name, rows in seen.items():
        print(f"median {name:<6} {statistics.median(r[0] for r in rows):>9.3f} CPU ms "
              f"{statistics.median(r[1] for r in rows):>9.3f} wall ms  ({trees[name]})")
    print("command:", shlex.join([sys.executable, *sys.argv]))


if __name__ == "__main__":
    main()
