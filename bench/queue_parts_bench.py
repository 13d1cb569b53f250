#!/usr/bin/env python3
"""Queue parts benchmark (on demand, not in CI): two per-task steps of queue mode, each against the way it
was done before, alternated in one process so a busy machine weighs on both alike.

- **fetch**: a worker's copy of the staged original into its delivery's temp folder: through
  ``ObjectStore.download`` (atomic write: fsync of the file and its folder) vs ``pipelines.queued._download``
  (a plain new private file: it is scratch, not an output).
- **send**: ``Submitter``'s ``send_task`` with Celery's saferepr of the spec in the headers vs with
  ``argsrepr``/``kwargsrepr`` naming the job.

Starts its own Redis and MinIO on loopback (tests/servers.py). Prints wall ms and CPU ms (this process, and
the servers for fetch) per call over --repeat alternated calls.

    .venv/bin/python bench/queue_parts_bench.py                # ~30 s
    .venv/bin/python bench/queue_parts_bench.py --repeat 200 --kb 400
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "pipelines"), str(ROOT / "bench")]

from pipeline_support import make_settings  # noqa: E402
from queue_bench import trees_cpu  # noqa: E402
from servers import start_minio, start_redis  # noqa: E402


def timed(fn, servers: list[int]) -> tuple[float, float, float]:
    """(wall ms, this process's CPU ms, the servers' CPU ms) of one call."""
    served, cpu, wall = trees_cpu(servers) if servers else 0.0, time.process_time(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall * 1000, cpu * 1000, ((trees_cpu(servers) - served) * 1000 if servers else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=60, help="calls of each variant, alternated")
    parser.add_argument("--kb", type=int, default=150, help="size of the staged original (a 2-page scan ~150 kB)")
    args = parser.parse_args()

    from pipelines.queued import QUEUE, TASK, _download, conversion_options
    from pipelines.tasks import app_for
    from storage.objects import open_store

    base = Path(tempfile.mkdtemp(prefix="digitize-parts-bench-"))
    redis, minio = start_redis(base / "redis"), start_minio(base / "minio")
    rows: dict[str, list[tuple[float, float, float]]] = {}
    try:
        settings = make_settings(base / "data", minio.url("b" + uuid.uuid4().hex[:12]),
                                 "postgresql://unused@127.0.0.1/none")  # queue mode's check; never opened
        settings.queue.url = redis.url
        objects = open_store(settings)
        data = os.urandom(args.kb * 1024)
        sha = hashlib.sha256(data).hexdigest()
        (base / "original").write_bytes(data)
        key = f"_staging/{sha}"
        objects.put(key, base / "original", sha)
        app = app_for(settings)
        job = uuid.uuid4().hex
        spec = {"job": job, "key": key, "sha256": sha, "name": "Hồ sơ/000.00.31.H56-241015-0027/scan001.pdf",
                "options": conversion_options(settings), "hint": None, "sidecar": None,
                "run": uuid.uuid4().hex}
        servers = [redis.process.pid, minio.process.pid]
        work = base / "work"
        work.mkdir()

        def fetch_before() -> None:
            target = Path(tempfile.mkdtemp(dir=work)) / "scan.pdf"
            assert objects.download(key, target) == sha

        def fetch_now() -> None:
            target = Path(tempfile.mkdtemp(dir=work)) / "scan.pdf"
            assert _download(objects, key, target) == sha

        def send(**reprs):
            return lambda: app.send_task(TASK, args=[job, spec], kwargs={"signature": "0" * 64}, queue=QUEUE,
                                         task_id=f"{job}-{time.time_ns()}", **reprs)

        variants = {"fetch: ObjectStore.download (fsync file + folder)": (fetch_before, servers),
                    "fetch: queued._download (scratch file)": (fetch_now, servers),
                    "send: Celery's saferepr of the spec": (send(), []),
                    "send: argsrepr/kwargsrepr name the job": (send(argsrepr=f"('{job}', ...)", kwargsrepr="{...}"),
                                                               [])}
        for fn, _ in variants.values():  # warm: connections, the first send's imports
            fn()
        for _ in range(args.repeat):
            for name, (fn, watched) in variants.items():
                rows.setdefault(name, []).append(timed(fn, watched))
    finally:
        redis.stop()
        minio.stop()
    print(f"\nqueue parts bench: {args.repeat} alternated calls each, original {args.kb} kB, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"command: {shlex.join(['.venv/bin/python', 'bench/queue_parts_bench.py', *sys.argv[1:]])}\n")
    print("| step | wall ms | CPU ms (this process) | servers' CPU ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in rows.items():
        wall, cpu = (statistics.median(v[i] for v in values) for i in range(2))
        served = statistics.mean(v[2] for v in values)  # clock ticks: a median would be 0
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {served:.2f} |")
    print("\nWall and this process's CPU: medians per call; the servers' CPU (Redis, MinIO; the send's Redis is "
          "not watched): mean per call, from /proc's clock ticks.")


if __name__ == "__main__":
    main()
