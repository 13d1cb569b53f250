#!/usr/bin/env python3
"""Queue benchmark (on demand, not in CI): queue mode's pages/min with 1, 2 (and 4) worker processes
against in-process ``digitize batch`` on the same generated files, and the queue's overhead per document.

Starts its own Redis, MinIO and PostgreSQL on loopback (tests/servers.py), generates FILES small
A4 text scans (--pages each), then for each configuration a fresh bucket and database:

1. ``digitize batch SRC --local --jobs N`` (N = 2): the in-process baseline, wall clock;
2. ``digitize worker --concurrency W`` for W in --workers, and ``digitize batch SRC --queue --wait``.

Overhead per document = (queued wall time x W - local wall time x N) / files, i.e. the extra core-seconds
each document costs in queue mode (staging upload, message, download, ledger). Targets (issue 14): queue
overhead <= 5 % of the in-process batch; 2 workers >= 1.8 x one worker's pages/min.

    .venv/bin/python bench/queue_bench.py                      # table on stdout, JSON in bench/results/
    .venv/bin/python bench/queue_bench.py --files 40 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "pipelines")]

from pipeline_support import digitize_cmd, make_settings, settings_env  # noqa: E402
from pages import VIETNAMESE_LINES, render_text_page  # noqa: E402
from PIL import Image  # noqa: E402
from scans import write_pdf  # noqa: E402
from servers import start_minio, start_postgres, start_redis  # noqa: E402

LINE = re.compile(r"(\d+) pages converted in ([\d.]+) s")


def run_batch(env: dict[str, str], *args: str) -> tuple[int, float]:
    started = time.monotonic()
    done = subprocess.run(digitize_cmd("batch", *args), env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    found = LINE.search(done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"batch failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--pages", type=int, default=2, help="A4 text pages per file (150 dpi)")
    parser.add_argument("--jobs", type=int, default=2, help="in-process batch --jobs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="digitize-queue-bench-"))
    src = base / "src"
    src.mkdir()
    for n in range(args.files):
        write_pdf([Image.fromarray(render_text_page([f"Hồ sơ số {n} trang {p + 1}", *VIETNAMESE_LINES]))
                   for p in range(args.pages)], src / f"scan{n:03d}.pdf")
    redis, minio, pg = start_redis(base / "redis"), start_minio(base / "minio"), start_postgres()
    rows = []
    try:
        def fresh() -> tuple[object, dict[str, str]]:
            settings = make_settings(base / f"data-{uuid.uuid4().hex[:6]}", minio.url("b" + uuid.uuid4().hex[:12]),
                                     pg.create_database("b_" + uuid.uuid4().hex[:12]))
            from storage.archive import Archive

            Archive.open(settings).close()  # the schema first: concurrent first opens of a fresh database race
            env = settings_env(settings)
            env.update(DIGITIZE_QUEUE_URL=redis.url)
            return settings, env

        _, env = fresh()
        pages, wall = run_batch(env, str(src), "--local", "--jobs", str(args.jobs))
        rows.append(("digitize batch --local", args.jobs, pages, wall))
        for workers in args.workers:
            import redis as redis_client

            redis_client.Redis.from_url(redis.url).flushall()  # an empty ledger per run: job IDs repeat
            _, env = fresh()
            worker = subprocess.Popen(digitize_cmd("worker", "--concurrency", str(workers), "--loglevel", "WARNING"),
                                      env=dict(env, DIGITIZE_DATA_DIR=str(base / f"worker-{workers}")), cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                time.sleep(3)  # the pool is up before the clock starts
                pages, wall = run_batch(env, str(src), "--queue", "--wait")
            finally:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=120)
            rows.append(("digitize worker + batch --queue --wait", workers, pages, wall))
    finally:
        redis.stop()
        minio.stop()
        pg.stop()

    local = rows[0]
    print("| pipeline | processes | pages | seconds | pages/min | vs local |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, procs, pages, wall in rows:
        ppm = pages / wall * 60
        ratio = ppm / (local[2] / local[3] * 60)
        print(f"| {name} | {procs} | {pages} | {wall:.1f} | {ppm:.1f} | {ratio:.2f} |")
    same = [r for r in rows[1:] if r[1] == local[1]]
    if same:
        overhead = (same[0][3] - local[3]) * local[1] / args.files
        print(f"\nqueue overhead per document (same {local[1]} processes): {overhead:.2f} core-seconds "
              f"({(same[0][3] / local[3] - 1) * 100:.1f} % of the local batch's wall time)")
    one = [r for r in rows[1:] if r[1] == 1]
    two = [r for r in rows[1:] if r[1] == 2]
    if one and two:
        print(f"2 workers / 1 worker pages/min: {(two[0][2] / two[0][3]) / (one[0][2] / one[0][3]):.2f}x")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "queue_bench.json").write_text(json.dumps([dict(zip(("pipeline", "processes", "pages", "seconds"), r))
                                                      for r in rows], indent=2))


if __name__ == "__main__":
    main()
