#!/usr/bin/env python3
"""Queue benchmark (on demand, not in CI): queue mode's pages/min with 1, 2 (and 4) worker processes
against in-process ``digitize batch`` on the same generated files, and the queue's overhead per document.

Starts its own Redis, MinIO and PostgreSQL on loopback (tests/servers.py); the FILES small A4 text scans
(--pages each) are generated once and cached under ~/.cache/digitize-bench/queue/. Then:

1. **probe** (seconds, no OCR): in this process, each file is submitted (staged in MinIO and verified,
   recorded in the ledger, its task signed and sent) and run by :func:`pipelines.queued.run_job` with the conversion
   replaced by a stub, so what is timed is exactly what queue mode adds per document: staging, ledger
   writes, the worker's fetch and SHA-256 check, the staging object's delete. Printed in ms, and as a
   share of the in-process batch's core-seconds per document (from step 2). Robust on a busy machine:
   both are CPU time of the same code, not wall-clock races.
2. ``digitize batch SRC --local --jobs N``: the in-process baseline, wall clock;
3. ``digitize worker --concurrency W`` for W in --workers, and ``digitize batch SRC --queue --wait``.
   Each run also reports its CPU-seconds per page (its own processes and the servers', not the machine's),
   a ratio that stays meaningful while other work shares the cores.
   Wall-clock overhead = (queued wall x W - local wall x N) / files core-seconds per document.

Targets (issue 14): queue overhead <= 5 % of the in-process batch; 2 workers >= 1.8 x one worker's pages/min.
The queue secret that signs tasks is a random one per run (tests/pipelines/pipeline_support.QUEUE_SECRET, in
DIGITIZE_QUEUE_SECRET for the worker and batch processes); the worker's signature check (~0.1 ms) is in step 3.
A worker process converts one file at a time, its pages one after another (one core): W processes use W cores.

    .venv/bin/python bench/queue_bench.py                      # table on stdout, JSON in bench/results/
    .venv/bin/python bench/queue_bench.py --probe-only         # the per-document overhead alone (~20 s)
    .venv/bin/python bench/queue_bench.py --files 40 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import signal
import statistics
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
CACHE = Path(os.environ.get("DIGITIZE_BENCH_CACHE", Path.home() / ".cache" / "digitize-bench")) / "queue"


def fixtures(files: int, pages: int) -> Path:
    """The generated scans, made once per (files, pages) and reused by later runs."""
    src = CACHE / f"f{files}-p{pages}"
    if not (src / ".complete").exists():
        src.mkdir(parents=True, exist_ok=True)
        for n in range(files):
            write_pdf([Image.fromarray(render_text_page([f"Hồ sơ số {n} trang {p + 1}", *VIETNAMESE_LINES]))
                       for p in range(pages)], src / f"scan{n:03d}.pdf")
        (src / ".complete").touch()
    return src


def adopt_orphans() -> None:
    """Become the child subreaper: a worker's page workers, orphaned when their pool process exits (they
    die with it), are reaped here, so their CPU time is counted (Linux prctl PR_SET_CHILD_SUBREAPER)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1)


def reap_orphans() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of this process's reaped children, and of the given server processes with
    their reaped children (PostgreSQL's backends): the run's own CPU, whatever else the machine does."""
    reap_orphans()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    return total


def tree_cpu(root: int) -> float:
    """CPU time so far of a live process tree (``root`` and its descendants, with what they reaped)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    tree, total = {root}, 0
    for _ in range(8):  # depth: worker -> pool process -> page worker
        tree |= {pid for pid, (ppid, _) in stats.items() if ppid in tree}
    for pid in tree:
        total += stats.get(pid, (0, 0))[1]
    return total / os.sysconf("SC_CLK_TCK")


def run_batch(env: dict[str, str], *args: str) -> tuple[int, float]:
    started = time.monotonic()
    done = subprocess.run(digitize_cmd("batch", *args), env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    found = LINE.search(done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"batch failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1)), wall


def wait_for_worker(settings, timeout: float = 120.0) -> None:
    """Until a worker answers a ping (its pool forked and consuming), so its start-up is not timed."""
    from pipelines.tasks import app_for

    app = app_for(settings)
    deadline = time.monotonic() + timeout
    while not app.control.ping(timeout=1.0):
        if time.monotonic() > deadline:
            raise SystemExit("the worker did not start")
    time.sleep(0.5)


def probe(settings, src: Path, profile: Path | None) -> dict[str, float]:
    """Median ms per document of each part queue mode adds (see the module docstring, step 1)."""
    import cProfile

    from pipelines.jobs import JobResult, Status, close_archives
    from pipelines.queued import Submitter, run_job

    def stub(path, settings, hint, **kw):  # the conversion and storing: the same in both modes, not timed
        return JobResult(str(path), Status.done, "", "")

    submitter = Submitter(settings)
    submit, work = [], []
    profiler = cProfile.Profile() if profile else None
    try:
        for path in sorted(src.glob("*.pdf")):
            if profiler:
                profiler.enable()
            t0 = time.perf_counter()
            job, result = submitter.submit_job(path, None, src)
            t1 = time.perf_counter()
            spec = submitter.ledger.get(job).spec
            t2 = time.perf_counter()
            outcome = run_job(settings, submitter.ledger, job, spec, "probe", 0, process=stub)
            t3 = time.perf_counter()
            if profiler:
                profiler.disable()
            if result.status is not Status.done or outcome.state != "done":
                raise SystemExit(f"probe: {path.name}: {result.reason} / {outcome.result.reason}")
            submit.append((t1 - t0) * 1000)
            work.append((t3 - t2) * 1000)
        submitter.ledger.redis.delete("digitize")  # the probe's tasks: no worker is to run them
    finally:
        submitter.close()
        close_archives()
    if profiler:
        profiler.dump_stats(profile)
    return {"submit_ms": statistics.median(submit), "worker_ms": statistics.median(work),
            "total_ms": statistics.median(a + b for a, b in zip(submit, work))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--pages", type=int, default=2, help="A4 text pages per file (150 dpi)")
    parser.add_argument("--jobs", type=int, default=2, help="in-process batch --jobs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--probe-only", action="store_true", help="only the per-document overhead probe")
    parser.add_argument("--profile", type=Path, help="cProfile of the probe (queue overhead only) to this file")
    parser.add_argument("--label", default="", help="a note printed with the table, e.g. 'under load'")
    args = parser.parse_args()

    src = fixtures(args.files, args.pages)
    adopt_orphans()
    base = Path(tempfile.mkdtemp(prefix="digitize-queue-bench-"))
    redis, minio, pg = start_redis(base / "redis"), start_minio(base / "minio"), start_postgres()
    rows = []
    try:
        def fresh() -> tuple[object, dict[str, str]]:
            settings = make_settings(base / f"data-{uuid.uuid4().hex[:6]}", minio.url("b" + uuid.uuid4().hex[:12]),
                                     pg.create_database("b_" + uuid.uuid4().hex[:12]))
            from storage.archive import Archive

            Archive.open(settings).close()  # the schema first: concurrent first opens of a fresh database race
            settings.queue.url = redis.url
            env = settings_env(settings)
            env.update(DIGITIZE_QUEUE_URL=redis.url)
            return settings, env

        import redis as redis_client

        settings, _ = fresh()
        overhead = probe(settings, src, args.profile)
        redis_client.Redis.from_url(redis.url).flushall()
        servers = [redis.process.pid, minio.process.pid,
                   int((pg.data_dir / "postmaster.pid").read_text().split()[0])]
        if not args.probe_only:
            _, env = fresh()
            cpu = cpu_seconds(servers)
            pages, wall = run_batch(env, str(src), "--local", "--jobs", str(args.jobs))
            rows.append(("digitize batch --local", args.jobs, pages, wall, cpu_seconds(servers) - cpu))
            for workers in args.workers:
                redis_client.Redis.from_url(redis.url).flushall()  # an empty ledger per run: job IDs repeat
                settings, env = fresh()
                worker = subprocess.Popen(digitize_cmd("worker", "--concurrency", str(workers), "--loglevel",
                                                       "WARNING"),
                                          env=dict(env, DIGITIZE_DATA_DIR=str(base / f"worker-{workers}")), cwd=ROOT,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                try:
                    wait_for_worker(settings)  # the pool is up before the clock starts
                    cpu = cpu_seconds(servers) + tree_cpu(worker.pid)  # its start-up is not counted
                    pages, wall = run_batch(env, str(src), "--queue", "--wait")
                finally:
                    os.killpg(worker.pid, signal.SIGTERM)
                    worker.wait(timeout=120)
                time.sleep(1)  # PostgreSQL reaps the worker's backends
                rows.append(("digitize worker + batch --queue --wait", workers, pages, wall,
                             cpu_seconds(servers) - cpu))
    finally:
        redis.stop()
        minio.stop()
        pg.stop()

    print(f"\nqueue bench: {args.files} files x {args.pages} pages{' - ' + args.label if args.label else ''}")
    print(f"command: {shlex.join(['.venv/bin/python', 'bench/queue_bench.py', *sys.argv[1:]])}\n")
    print(f"queue overhead per document (probe, median): {overhead['total_ms']:.1f} ms = "
          f"staging + ledger + send {overhead['submit_ms']:.1f} ms, worker fetch + ledger + delete "
          f"{overhead['worker_ms']:.1f} ms")
    if rows:
        local = rows[0]
        core_ms = local[3] * local[1] / args.files * 1000  # in-process core-milliseconds per document
        print(f"in-process batch: {core_ms:.0f} core-ms per document -> probe overhead "
              f"{overhead['total_ms'] / core_ms * 100:.2f} % (target <= 5 %)\n")
        print("| pipeline | processes | pages | seconds | pages/min | vs local | CPU-s/page | CPU vs local |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, procs, pages, wall, cpu in rows:
            ppm = pages / wall * 60
            ratio = ppm / (local[2] / local[3] * 60)
            print(f"| {name} | {procs} | {pages} | {wall:.1f} | {ppm:.1f} | {ratio:.2f} | {cpu / pages:.2f} | "
                  f"{cpu / pages / (local[4] / local[2]):.3f} |")
        print("\nCPU-s/page: CPU time of the run's processes (batch, workers, page workers, Redis, MinIO, "
              "PostgreSQL), not wall time: comparable on a busy machine. Equal CPU per page with 1 and 2 workers "
              "means nothing in the queue path serializes them; on idle cores they then scale as the cores do.")
        same = [r for r in rows[1:] if r[1] == local[1]]
        if same:
            extra = (same[0][3] - local[3]) * local[1] / args.files * 1000
            print(f"\nwall-clock queue overhead per document (same {local[1]} processes): {extra:.0f} core-ms "
                  f"({(same[0][3] / local[3] - 1) * 100:.1f} % of the local batch's wall time)")
        for row in rows[1:]:
            print(f"queue mode with {row[1]} worker process(es): CPU per page "
                  f"{(row[4] / row[2]) / (local[4] / local[2]) * 100 - 100:+.1f} % vs the local batch")
        one = [r for r in rows[1:] if r[1] == 1]
        two = [r for r in rows[1:] if r[1] == 2]
        if one and two:
            print(f"2 workers / 1 worker pages/min: {(two[0][2] / two[0][3]) / (one[0][2] / one[0][3]):.2f}x "
                  "(target >= 1.8x)")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "queue_bench.json").write_text(json.dumps({
        "label": args.label, "files": args.files, "pages": args.pages, "probe_ms": overhead,
        "runs": [dict(zip(("pipeline", "processes", "pages", "seconds", "cpu_seconds"), r)) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
