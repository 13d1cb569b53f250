#!/usr/bin/env python3
"""Queue benchmark (on demand, not in CI): queue mode's pages/min with 1, 2 (and 4) worker processes
against in-process ``digitize batch`` on the same pages, and the queue's overhead per document.

Starts its own Redis, MinIO and PostgreSQL on loopback (tests/servers.py); the FILES small A4 text scans
(--pages each) are rendered once and cached under ~/.cache/digitize-bench/queue/, and each timed batch gets
its own copy of them as PDFs with another title (cached too): the same pages, other bytes, so every batch
converts and stores everything afresh into one store and index. Then:

1. **probe** (seconds, no OCR): in this process, each file is submitted (staged in MinIO and verified,
   recorded in the ledger, its task signed and sent) and run by :func:`pipelines.queued.run_job` with the conversion
   replaced by a stub, so what is timed is exactly what queue mode adds per document: staging, ledger
   writes, the worker's fetch and SHA-256 check, the staging object's delete, after one untimed file (the
   first send's imports and connections are the process's). Printed in ms, and as a share of the
   in-process batch's CPU per document (from the rounds).
2. For each W in --workers: one ``digitize worker --concurrency W`` (--layout pool) and, for W > 1, W
   ``digitize worker --concurrency 1`` services sharing one broker (--layout services: the layout of W
   worker machines, each its own Celery consumer), each layout on its own broker database, started once
   and warmed with 2W files of its own (until every pool process has converted one and keeps its page
   worker) before any timing: workers are long-running services, their start-up is not a batch's cost.
   With --idle S, all of them then sit idle S seconds: their CPU by process role (Celery's main process,
   pool processes, page workers) per second, and their memory (PSS) by role. Before warming, **dispatch** (--dispatch N files that fail at once, not a PDF
   inside) through each started worker, as ``batch --queue --wait`` sends and waits: the real worker's per-task
   cost apart from converting (a delivery's own time, the gap between one process's tasks, set-up, pick-up,
   the waiter's wake-up); a failed file ends its slot's kept page worker, so the warming comes after it.
   With --py-spy DIR each worker's tree is sampled from then on (DIR/worker-W.txt, shares by part).
3. --rounds rounds, each of ``digitize batch SRC --local --jobs N`` (N in --jobs) and ``digitize batch SRC
   --queue --wait`` on each worker, in an order rotated from round to round. Each run gives the batch's
   own seconds (in-process: from its pool's start; queued: from the first submit to the last result), the
   whole command's wall time, and the CPU-seconds of its processes and the servers (not the machine's: a
   ratio that stays meaningful while other work shares the cores); queued runs also give a timeline from
   the ledger's per-job timestamps (submit window, first start, pool busy share, gaps between one pool
   process's tasks, end imbalance, the waiter's polling delay) and the workers' own pages/min (first task
   started to last finished: throughput without the batch command's per-batch start and wake-up).

Printed: medians over rounds with their range, and ratios paired by round (2 workers / 1 worker, both
layouts, on the batch's time and on the workers' span; queue vs local with the same number of processes;
the machine's own 2 / 1 scaling, in-process ``--jobs 2`` / ``--jobs 1``). Every batch holds the same
files, sent longest first as ``digitize batch`` sends them.
Targets (issue 14): queue overhead <= 5 % of the in-process batch; 2 workers >= 1.8 x one worker's pages/min.
The queue secret that signs tasks is a random one per run (tests/pipelines/pipeline_support.QUEUE_SECRET, in
DIGITIZE_QUEUE_SECRET for the worker and batch processes); the worker's signature check (~0.1 ms) is in step 3.
A worker process converts one file at a time, its pages one after another (one core): W processes use W cores.

    .venv/bin/python bench/queue_bench.py   # ~6 min quiet: probe, dispatch, 5 rounds of local 1 2, queue 1 2 2x1
    .venv/bin/python bench/queue_bench.py --probe-only         # the per-document overhead alone (~20 s)
    .venv/bin/python bench/queue_bench.py --layout pool --rounds 3     # no separate services, ~3 min
    .venv/bin/python bench/queue_bench.py --files 40 --workers 1 2 4
    .venv/bin/python bench/queue_bench.py --rounds 0 --py-spy /tmp/spy   # probe, dispatch, worker profile (~1 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "pipelines")]

from pipeline_support import digitize_cmd, make_settings, settings_env  # noqa: E402
from pages import VIETNAMESE_LINES, render_text_page  # noqa: E402
from PIL import Image  # noqa: E402
from scans import DPI  # noqa: E402
from servers import start_minio, start_postgres, start_redis  # noqa: E402

LINE = re.compile(r"(\d+) pages converted in ([\d.]+) s")
CACHE = Path(os.environ.get("DIGITIZE_BENCH_CACHE", Path.home() / ".cache" / "digitize-bench")) / "queue"


def page_images(files: int, pages: int) -> Path:
    """The generated page images (PNG), rendered once per (files, pages) and reused by later runs."""
    folder = CACHE / f"f{files}-p{pages}" / "images"
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(files):
            for p in range(pages):
                Image.fromarray(render_text_page([f"Hồ sơ số {n} trang {p + 1}", *VIETNAMESE_LINES])).save(
                    folder / f"scan{n:03d}-{p:02d}.png")
        (folder / ".complete").touch()
    return folder


def variant(images: Path, name: str, files: int | None = None) -> Path:
    """The scans as PDFs titled NAME (cached): the same pages as every other variant, other bytes, so each timed
    batch converts and stores everything afresh in the one store and index the warm workers keep."""
    src = images.parent / name
    if not (src / ".complete").exists():
        src.mkdir(parents=True, exist_ok=True)
        scans = sorted({p.name.rsplit("-", 1)[0] for p in images.glob("scan*.png")})[:files]
        for scan in scans:
            first, *rest = [Image.open(p).convert("L") for p in sorted(images.glob(f"{scan}-*.png"))]
            first.save(src / f"{scan}.pdf", format="PDF", save_all=True, append_images=rest, resolution=DPI,
                       title=f"{scan} {name}")
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


def proc_stats() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU clock ticks: utime stime cutime cstime) of every live process."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    return stats


def tree_depths(roots: list[int], stats: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Each live process of the trees under ROOTS -> its depth below its root (worker -> pool -> page worker)."""
    depth = {pid: 0 for pid in roots if pid in stats}
    for level in range(1, 8):
        found = {pid: level for pid, (ppid, _) in stats.items() if depth.get(ppid) == level - 1 and pid not in depth}
        if not found:
            break
        depth.update(found)
    return depth


def trees_cpu(roots: list[int]) -> float:
    """CPU time so far of live process trees (each root and its descendants, with what they reaped): the
    servers (PostgreSQL's backends included, live or exited) and a worker (pool processes, page workers)."""
    stats = proc_stats()
    return sum(stats[pid][1] for pid in tree_depths(roots, stats)) / os.sysconf("SC_CLK_TCK")


ROLES = ("main", "pool", "page")  # a worker tree's depths: Celery's main process, its pool processes, page workers


def tree_roles(roots: list[int]) -> dict[str, float]:
    """CPU-s so far of worker trees by role (depth below a root: 0 Celery's main process with its consumer, timers
    and pool parent; 1 pool processes; 2+ page workers): which processes a layout's extra CPU is in. A process's
    own time plus what it reaped (a dead child's CPU counts with its parent's role)."""
    stats = proc_stats()
    roles = dict.fromkeys(ROLES, 0.0)
    for pid, level in tree_depths(roots, stats).items():
        roles[ROLES[min(level, 2)]] += stats[pid][1] / os.sysconf("SC_CLK_TCK")
    return roles


def tree_pss(roots: list[int]) -> dict[str, float]:
    """MB of proportional set size (shared pages split among their sharers) of worker trees by role: what a
    layout holds in memory (a second service: a second Celery main process, its own preloaded modules)."""
    roles = dict.fromkeys(ROLES, 0.0)
    for pid, level in tree_depths(roots, proc_stats()).items():
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        found = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        roles[ROLES[min(level, 2)]] += int(found.group(1)) / 1024 if found else 0.0
    return roles


def pool_cpu(roots: list[int]) -> dict[int, float]:
    """CPU-s so far of each pool process (depth 1) of the worker trees: a cold one (a first task's connections,
    page worker, models) stands out in a round."""
    stats = proc_stats()
    return {pid: stats[pid][1] / os.sysconf("SC_CLK_TCK") for pid, level in tree_depths(roots, stats).items()
            if level == 1}


def page_pids(roots: list[int]) -> set[int]:
    """The live page workers (depth 2+) of the worker trees: a new pid in a round is a page worker started anew."""
    stats = proc_stats()
    return {pid for pid, level in tree_depths(roots, stats).items() if level >= 2}


def cpu_parts(servers: list[int], workers: list[int] = ()) -> dict[str, float]:
    """CPU-s so far of the run's parts: the `digitize batch` commands (reaped children of this process, their
    own pools and page workers included), the queue workers' trees, the servers' trees."""
    reap_orphans()  # a worker's page workers orphaned by their pool process: counted with the batch
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    roles = tree_roles(list(workers)) if workers else dict.fromkeys(ROLES, 0.0)
    return {"batch": usage.ru_utime + usage.ru_stime, "workers": trees_cpu(list(workers)) if workers else 0.0,
            "servers": trees_cpu(servers), **{f"workers:{role}": cpu for role, cpu in roles.items()}}


def run_batch(env: dict[str, str], *args: str) -> tuple[int, float, float]:
    """Pages, the batch's own seconds (its summary line) and the command's wall time."""
    started = time.monotonic()
    done = subprocess.run(digitize_cmd("batch", *args), env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    found = LINE.search(done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"batch failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1)), float(found.group(2)), wall


def wait_for_worker(settings, count: int = 1, timeout: float = 120.0) -> None:
    """Until COUNT workers answer a ping (their pools forked and consuming), so their start-up is not timed."""
    from pipelines.tasks import app_for

    app = app_for(settings)
    deadline = time.monotonic() + timeout
    while len(app.control.ping(timeout=1.0)) < count:
        if time.monotonic() > deadline:
            raise SystemExit("the worker did not start")
    time.sleep(0.5)


def probe(settings, src: Path, profile: Path | None, servers: list[int], warm: Path | None = None
          ) -> dict[str, float]:
    """Median ms per document of each part queue mode adds (see the module docstring, step 1). The files in
    WARM go through first, untimed: the first task's one-off costs (Celery's message and producer modules
    imported at the first send, connections) are a process's, not a document's."""
    import cProfile

    from pipelines.jobs import JobResult, Status, close_archives
    from pipelines.queued import Submitter, run_job

    def stub(path, settings, hint, **kw):  # the conversion and storing: the same in both modes, not timed
        return JobResult(str(path), Status.done, "", "")

    submitter = Submitter(settings)
    for path in sorted(warm.glob("*.pdf")) if warm else []:
        job, _ = submitter.submit_job(path, None, warm)
        run_job(settings, submitter.ledger, job, submitter.ledger.get(job).spec, "probe", 0, process=stub)
    submit, work = [], []
    cpu, served = time.process_time(), trees_cpu(servers)  # CPU, not wall: a loaded machine stretches the waits
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
    cpu = (time.process_time() - cpu + trees_cpu(servers) - served) / len(submit) * 1000
    return {"cpu_ms": cpu, "submit_ms": statistics.median(submit), "worker_ms": statistics.median(work),
            "total_ms": statistics.median(a + b for a, b in zip(submit, work))}


def dispatch(settings, procs: int, tasks: int, profile: Path | None = None) -> dict[str, float]:
    """The real worker's cost per task apart from converting: TASKS tiny files that fail at once (not a PDF
    inside, bad input: no retry) sent through the warm ``worker --concurrency PROCS`` and waited for as
    ``batch --queue --wait`` waits. What is left is what every task pays: staging, signing, the broker
    round trip, ack and next message, the ledger, the fetch, the page worker's first look, the waiter's
    wake-up; the gap (one process's end to its next start) is the dispatch latency a real batch pays per file."""
    from pipelines.batch import BatchItem
    from pipelines.queued import run_queued_batch

    src = Path(tempfile.mkdtemp(prefix="digitize-dispatch-"))
    for n in range(tasks):
        (src / f"bad{n:03d}.pdf").write_bytes(b"not a PDF " + uuid.uuid4().bytes)  # fresh bytes: a new job
    items = [BatchItem(p, p.stat().st_size, None) for p in sorted(src.glob("*.pdf"))]
    import cProfile

    profiler = cProfile.Profile() if profile else None
    launched = time.time()
    with open(os.devnull, "w") as quiet:
        summary = (profiler.runcall if profiler else lambda f, *a: f(*a))(run_queued_batch, src, items, settings,
                                                                          True, quiet)
    ended = time.time()
    if profiler:
        profiler.dump_stats(profile)
    line = timeline(settings.queue.url, procs, launched, ended)
    waited = ended - launched
    if len(summary.results) != tasks:
        raise SystemExit(f"dispatch: {len(summary.results)} of {tasks} results")
    return {"tasks": tasks, "per_task_ms": waited / tasks * procs * 1000, "gap_ms": line["gap_ms"],
            "task_ms": line["task_ms"], "wake_ms": line["end"] * 1000, "setup_ms": line["start"] * 1000,
            "first_ms": line["first_start"] * 1000}


@dataclass
class Run:
    """One timed batch: in-process (``workers`` 0) or through warm queue workers."""

    kind: str  # "local", "queue" (one `worker --concurrency N`) or "services" (N `worker --concurrency 1`)
    processes: int
    round: int
    pages: int = 0
    seconds: float = 0.0  # the batch's own time: in-process from its pool's start, queued from the first submit
    wall: float = 0.0  # the whole `digitize batch` command, interpreter start and imports included
    cpu: float = 0.0  # CPU-s of the run's processes and the servers
    cpu_parts: dict[str, float] = field(default_factory=dict)  # the same by part: batch, workers, servers
    timeline: dict[str, float] = field(default_factory=dict)
    pool_cpu: dict[str, float] = field(default_factory=dict)  # queued: CPU-s of each pool process (pid -> s)
    new_page_workers: int = 0  # queued: page workers started during the run (a kept one ended: a cold start)

    @property
    def ppm(self) -> float:
        return self.pages / self.seconds * 60

    @property
    def work_ppm(self) -> float:
        """Queued: pages/min over the workers' own span (first task started to last task finished, the
        ledger's timestamps): their throughput, without the batch command's per-batch start and wake-up."""
        return self.pages / self.timeline["work"] * 60 if self.timeline.get("work") else 0.0


def timeline(ledger_url: str, processes: int, launched: float = 0.0, ended: float = 0.0) -> dict[str, float]:
    """Where a queued batch's time went, from the ledger's per-job timestamps (enqueued, started, finished,
    and the pool process that ran it): not wall-clock races but the order of events, valid under load.
    The ledger's records are removed afterwards, so the next run reads only its own."""
    import redis as redis_client

    client = redis_client.Redis.from_url(ledger_url, decode_responses=True)
    keys = list(client.scan_iter("digitize:q:job:*"))
    records = [client.hgetall(k) for k in keys]
    client.delete(*keys, *client.keys("digitize:q:state:*"), *client.keys("digitize:q:batch:*"))
    client.close()
    jobs = [(float(r["enqueued"]), float(r["started"]), float(r["finished"]), r["worker"]) for r in records]
    first, last = min(j[0] for j in jobs), max(j[2] for j in jobs)
    span = last - first
    per: dict[str, list[tuple[float, float]]] = {}
    for _, begun, over, who in jobs:
        per.setdefault(who, []).append((begun, over))
    gaps = [b2 - e1 for runs in per.values() for (_, e1), (b2, _) in zip(sorted(runs), sorted(runs)[1:])]
    busy = sum(e - b for runs in per.values() for b, e in runs)
    return {"span": span, "start": first - launched, "end": ended - last, "submit": max(j[0] for j in jobs) - first,
            "first_start": min(j[1] for j in jobs) - first, "work": last - min(j[1] for j in jobs),
            "gap_ms": statistics.median(gaps) * 1000 if gaps else 0.0,
            "tail": last - statistics.mean(max(e for _, e in runs) for runs in per.values()),
            "busy": busy / (processes * span), "used": len(per),
            "task_ms": statistics.median(over - begun for _, begun, over, _ in jobs) * 1000}


def start_worker(env: dict[str, str], workers: int, data: Path, url: str) -> subprocess.Popen:
    """A worker in its own process group (killed as one) but in this session: with the kernel's autogroup
    scheduling (/proc/sys/kernel/sched_autogroup_enabled) each session shares the CPU as one group, so a
    worker in a session of its own would get a share of its own on a busy machine, N services N shares,
    while the in-process batch (run from this session) gets one: wall times under load compared sessions."""
    data.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(digitize_cmd("worker", "--concurrency", str(workers), "--loglevel", "WARNING"),
                            env=dict(env, DIGITIZE_DATA_DIR=str(data), DIGITIZE_QUEUE_URL=url), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)


SPY_PARTS = [  # (part, substrings one frame holds): the first part of this list found in a stack takes its samples
    ("page worker (conversion)", ("pageworkers.py",)), ("staged original: fetch", ("_fetch (",)),
    ("ledger", ("ledger.py",)), ("staging delete", ("delete (", "objects.py")), ("metrics", ("metrics.py",)),
    ("task signature", ("taskauth.py",)), ("store + index", ("/storage/",)),
    ("conversion (in the pool process)", ("/digitize/",)), ("run_job, rest", ("queued.py",)),
    ("celery / kombu / billiard", ("/celery/",)), ("celery / kombu / billiard", ("/kombu/",)),
    ("celery / kombu / billiard", ("/billiard/",)), ("redis client", ("/redis/",))]


WAITS = {"poll", "select", "_recv", "wait", "_wait_for_tstate_lock", "_read_from_socket", "sleep", "accept",
         "recv_into", "epoll"}


def spy(pid: int, out: Path) -> subprocess.Popen:
    """py-spy sampling a worker's whole tree (pool processes, page workers) into collapsed stacks."""
    return subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
                             "--subprocesses", "--rate", "50", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def spy_parts(path: Path) -> dict[str, float]:
    """Shares of a collapsed-stack profile by part (SPY_PARTS), innermost named frame first."""
    parts: dict[str, float] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if frames[-1].split(" (")[0].rsplit(".", 1)[-1] in WAITS:
            continue  # a thread blocked in a call py-spy took for running (a loaded machine): not CPU
        total += int(count)
        part = next((name for name, marks in SPY_PARTS for frame in frames if all(m in frame for m in marks)), "other")
        parts[part] = parts.get(part, 0) + int(count)
    return {k: v / total * 100 for k, v in sorted(parts.items(), key=lambda kv: -kv[1])} if total else {}


def median_spread(values: list[float], fmt: str = "{:.1f}") -> str:
    """The median, and the range over rounds when there are several."""
    text = fmt.format(statistics.median(values))
    return text + (f" ({fmt.format(min(values))}–{fmt.format(max(values))})" if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--pages", type=int, default=2, help="A4 text pages per file (150 dpi)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="in-process batch --jobs (e.g. 1 2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes: W slots each")
    parser.add_argument("--layout", nargs="+", choices=("pool", "services"), default=["pool", "services"],
                        help="W slots as one `worker --concurrency W` (pool) and/or as W `worker --concurrency 1` "
                        "services on one broker (services: two worker machines' layout; W > 1 only)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every pipeline, in rotated order")
    parser.add_argument("--dispatch", type=int, default=24,
                        help="files that fail at once, sent through each warm worker: its per-task cost (0: none)")
    parser.add_argument("--idle", type=float, default=10.0,
                        help="seconds all warm workers sit idle, their CPU measured by process role (0: skip)")
    parser.add_argument("--probe-only", action="store_true", help="only the per-document overhead probe")
    parser.add_argument("--profile", type=Path, help="cProfile of the probe (queue overhead only) to this file, "
                        "and of each dispatch batch (submitting and waiting) to FILE.dispatchW")
    parser.add_argument("--py-spy", type=Path, help="sample each worker's process tree with py-spy (after warming) "
                        "into DIR/worker-W.txt and print where its CPU went")
    parser.add_argument("--label", default="", help="a note printed with the table, e.g. 'under load'")
    args = parser.parse_args()

    started = time.monotonic()
    images = page_images(args.files, args.pages)
    adopt_orphans()
    base = Path(tempfile.mkdtemp(prefix="digitize-queue-bench-"))
    redis, minio, pg = start_redis(base / "redis"), start_minio(base / "minio"), start_postgres()
    runs: list[Run] = []
    # (kind, slots) -> the worker processes serving that broker database, and its URL
    workers: dict[tuple[str, int], tuple[list[subprocess.Popen], str]] = {}
    dispatched: dict[tuple[str, int], dict[str, float]] = {}
    idle: dict[tuple[str, int], dict[str, float]] = {}  # layout -> CPU-ms per second idle, by role
    memory: dict[tuple[str, int], dict[str, float]] = {}  # layout -> MB PSS, by role, when idle
    spies: dict[str, subprocess.Popen] = {}
    try:
        settings = make_settings(base / "data", minio.url("b" + uuid.uuid4().hex[:12]),
                                 pg.create_database("b_" + uuid.uuid4().hex[:12]))
        from storage.archive import Archive

        Archive.open(settings).close()  # the schema first: concurrent first opens of a fresh database race
        settings.queue.url = redis.url
        env = settings_env(settings)
        servers = [redis.process.pid, minio.process.pid,
                   int((pg.data_dir / "postmaster.pid").read_text().split()[0])]
        overhead = probe(settings, variant(images, "probe"), args.profile, servers, variant(images, "probewarm", 1))
        if not args.probe_only:
            # the workers are services: started once, warmed (each pool process has converted a file: page worker
            # forked, Tesseract loaded, store and index connected), then timed batch after batch
            layouts = [("queue", w) for w in args.workers if "pool" in args.layout or w == 1]
            layouts += [("services", w) for w in args.workers if "services" in args.layout and w > 1]
            for n, (kind, count) in enumerate(layouts, start=1):
                url = f"{redis.url.rsplit('/', 1)[0]}/{n}"  # a broker (and ledger) database per layout
                procs = ([start_worker(env, count, base / f"worker-{count}", url)] if kind == "queue" else
                         [start_worker(env, 1, base / f"service-{count}-{i}", url) for i in range(count)])
                workers[(kind, count)] = (procs, url)
            for (kind, count), (procs, url) in workers.items():
                on_url = dataclasses.replace(settings, queue=dataclasses.replace(settings.queue, url=url))
                wait_for_worker(on_url, len(procs))
                if args.dispatch:  # before warming: a file that fails ends its slot's kept page worker
                    dispatched[(kind, count)] = dispatch(on_url, count, args.dispatch, args.profile and
                                                         args.profile.with_suffix(f".dispatch-{kind}{count}"))
                pids = [proc.pid for proc in procs]
                for attempt in range(4):  # until every pool process has converted a file and keeps its page worker
                    # (Redis hands a message to whichever consumer asks first). Each layout its own files, fresh
                    # bytes each attempt: files another layout stored already are skipped by their SHA-256 without
                    # converting, which left the services' page workers to start in the first timed round
                    run_batch(dict(env, DIGITIZE_QUEUE_URL=url),
                              str(variant(images, f"warm-{kind}{count}-{attempt}", 2 * count)), "--queue", "--wait")
                    used, paging = timeline(url, count)["used"], len(page_pids(pids))
                    if used >= count and paging >= count:
                        break
                print(f"warm-up, {label(kind, count)}: {used} of {count} pool processes converted a file, "
                      f"{paging} page worker(s) kept", file=sys.stderr)
                if args.py_spy:  # from here on: the timed rounds, not start-up, dispatch and warming
                    args.py_spy.mkdir(parents=True, exist_ok=True)
                    for i, proc in enumerate(procs):
                        name = f"worker-{count}" if kind == "queue" else f"service-{count}-{i}"
                        spies[name] = spy(proc.pid, args.py_spy / f"{name}.txt")
            if args.idle:  # every layout up, warm and idle at once: what a service costs while it waits
                before = {k: tree_roles([p.pid for p in procs]) for k, (procs, _) in workers.items()}
                time.sleep(args.idle)
                idle = {k: {role: (cpu - before[k][role]) / args.idle * 1000
                            for role, cpu in tree_roles([p.pid for p in procs]).items()}
                        for k, (procs, _) in workers.items()}
                memory = {k: tree_pss([p.pid for p in procs]) for k, (procs, _) in workers.items()}
            plan = [("local", j) for j in args.jobs] + list(workers)
            for r in range(args.rounds):
                for kind, procs in plan[r % len(plan):] + plan[:r % len(plan)]:  # rotated: no pipeline always first
                    src = variant(images, f"r{r}-{kind}{procs}")  # fresh bytes: nothing is "already stored"
                    run = Run(kind, procs, r)
                    data = base / f"data-{kind}{procs}-{r}"
                    if kind == "local":
                        cpu = cpu_parts(servers)
                        run.pages, run.seconds, run.wall = run_batch(dict(env, DIGITIZE_DATA_DIR=str(data)), str(src),
                                                                     "--local", "--jobs", str(procs))
                        run.cpu_parts = {k: v - cpu[k] for k, v in cpu_parts(servers).items()}
                    else:
                        serving, url = workers[(kind, procs)]
                        pids = [proc.pid for proc in serving]
                        cpu, pool, pages = cpu_parts(servers, pids), pool_cpu(pids), page_pids(pids)
                        launched = time.time()
                        run.pages, run.seconds, run.wall = run_batch(
                            dict(env, DIGITIZE_DATA_DIR=str(data), DIGITIZE_QUEUE_URL=url), str(src), "--queue",
                            "--wait")
                        run.cpu_parts = {k: v - cpu[k] for k, v in cpu_parts(servers, pids).items()}
                        run.timeline = timeline(url, procs, launched, time.time())
                        run.pool_cpu = {str(pid): cpu - pool.get(pid, 0.0) for pid, cpu in pool_cpu(pids).items()}
                        run.new_page_workers = len(page_pids(pids) - pages)
                    run.cpu = sum(run.cpu_parts[k] for k in ("batch", "workers", "servers"))
                    runs.append(run)
                    print(f"round {r + 1}/{args.rounds}: {kind} {procs}: {run.pages} pages in {run.seconds:.1f} s "
                          f"({run.wall:.1f} s command), {run.cpu / run.pages:.2f} CPU-s/page"
                          + (", pool processes " + " ".join(f"{v:.2f}" for v in run.pool_cpu.values()) + " CPU-s"
                             + f", {run.new_page_workers} page worker(s) started" if run.pool_cpu else ""),
                          file=sys.stderr)
    finally:
        for sampler in spies.values():
            sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            sampler.wait(timeout=60)
        for procs, _ in workers.values():
            for worker in procs:
                os.killpg(worker.pid, signal.SIGTERM)
            for worker in procs:
                worker.wait(timeout=120)
        redis.stop()
        minio.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)  # the run's data, store and broker files (the fixtures are cached)
    report(args, overhead, dispatched, runs, time.monotonic() - started, idle, memory)
    for name in spies:
        parts = spy_parts(args.py_spy / f"{name}.txt")
        print(f"\n{name}, py-spy (CPU samples of its tree, {args.py_spy}/{name}.txt): "
              + ", ".join(f"{part} {share:.1f} %" for part, share in parts.items()))


NAMES = {"local": "digitize batch --local", "queue": "worker --concurrency N + batch --queue --wait",
         "services": "N x worker --concurrency 1 + batch --queue --wait"}


def label(kind: str, procs: int) -> str:
    return {"local": f"local {procs}", "queue": f"worker x{procs}", "services": f"{procs} workers x1"}[kind]


def report(args, overhead: dict[str, float], dispatched: dict[tuple[str, int], dict[str, float]], runs: list[Run],
           elapsed: float, idle: dict[tuple[str, int], dict[str, float]] | None = None,
           memory: dict[tuple[str, int], dict[str, float]] | None = None) -> None:
    print(f"\nqueue bench: {args.files} files x {args.pages} pages, {args.rounds} round(s), {os.cpu_count()} CPUs"
          f"{' - ' + args.label if args.label else ''} ({elapsed / 60:.1f} min)")
    print(f"command: {shlex.join(['.venv/bin/python', 'bench/queue_bench.py', *sys.argv[1:]])}\n")
    print(f"queue overhead per document (probe, median): {overhead['total_ms']:.1f} ms = "
          f"staging + ledger + send {overhead['submit_ms']:.1f} ms, worker fetch + ledger + delete "
          f"{overhead['worker_ms']:.1f} ms; in CPU (this process and the servers, mean): {overhead['cpu_ms']:.1f} "
          "CPU-ms")
    if dispatched:
        print(f"\nPer-task cost of the real workers without converting ({args.dispatch} files that fail at once, "
              "through `run_queued_batch` as `batch --queue --wait`): *per task* the batch's wall time per task and "
              "process; *task* a delivery's own time (fetch, ledger, the page worker's look); *gap* from one "
              "process's end of a task to its next start (result to the pool's parent, ack, next message, "
              "dispatch); *setup* from the call to the first task sent (submitter, connections, the first staging); "
              "*first* from there to a worker starting it; *wake* from the last outcome to the waiter's return.\n")
        print("| workers | slots | tasks | per task ms | task ms | gap ms | setup ms | first ms | wake ms |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for (kind, procs), d in dispatched.items():
            print(f"| {label(kind, procs)} | {procs} | {d['tasks']} | {d['per_task_ms']:.1f} | {d['task_ms']:.1f} | "
                  f"{d['gap_ms']:.1f} | {d['setup_ms']:.0f} | {d['first_ms']:.0f} | {d['wake_ms']:.0f} |")
        print()
    if idle:
        print(f"\nWorkers idle ({args.idle:g} s, all layouts up and warm at once): CPU-ms per second of the layout's "
              "processes by role (*main* Celery's main process: consumer, broker polls, timers, pool parent; *pool* "
              "pool processes; *page* page workers), and per service; their memory (PSS, MB) by role.\n")
        print("| workers | services | main | pool | page | total | per service | PSS MB main | pool | page | total |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for (kind, procs), roles in idle.items():
            services = procs if kind == "services" else 1
            total = sum(roles.values())
            mb = (memory or {}).get((kind, procs), dict.fromkeys(ROLES, 0.0))
            print(f"| {label(kind, procs)} | {services} | {roles['main']:.2f} | {roles['pool']:.2f} | "
                  f"{roles['page']:.2f} | {total:.2f} | {total / services:.2f} | {mb['main']:.0f} | "
                  f"{mb['pool']:.0f} | {mb['page']:.0f} | {sum(mb.values()):.0f} |")
    groups: dict[tuple[str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.kind, run.processes), []).append(run)
    locals_ = [g for (kind, _), g in groups.items() if kind == "local"]
    if not locals_:
        return
    local = max(locals_, key=lambda g: g[0].processes)
    local_cpu = statistics.median(r.cpu / r.pages for r in local)
    core_ms = local_cpu * local[0].pages / args.files * 1000  # in-process CPU-ms per document
    print(f"in-process batch: {core_ms:.0f} CPU-ms per document -> probe overhead "
          f"{overhead['total_ms'] / core_ms * 100:.2f} % in ms, {overhead['cpu_ms'] / core_ms * 100:.2f} % in CPU "
          "(target <= 5 %; the CPU share is the one that holds on a loaded machine)\n")
    print("Medians over rounds, (min–max) when several. *seconds*: the batch's own time (in-process: from its pool's "
          "start; queued: from the first submit to the last result, workers up and warm); *worker pages/min*: "
          "queued, over the workers' own span (first task started to last finished: their throughput without the "
          "batch command's start and wake-up, what a long campaign sees); *command s*: the whole `digitize batch` "
          "process, interpreter start and imports included. *worker xN*: one `digitize worker --concurrency N`; "
          "*N workers x1*: N `digitize worker --concurrency 1` services on one broker (N machines' layout).\n")
    print("| pipeline | slots | pages | seconds | pages/min | worker pages/min | vs local | command s | CPU-s/page | "
          "CPU vs local |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    local_ppm = statistics.median(r.ppm for r in local)
    for (kind, procs), group in groups.items():
        cpu = statistics.median(r.cpu / r.pages for r in group)
        work = median_spread([r.work_ppm for r in group]) if kind != "local" else "–"
        print(f"| {NAMES[kind]} | {procs} | {group[0].pages} | {median_spread([r.seconds for r in group])} | "
              f"{median_spread([r.ppm for r in group])} | {work} | "
              f"{statistics.median(r.ppm for r in group) / local_ppm:.2f} | "
              f"{statistics.median(r.wall for r in group):.1f} | "
              f"{median_spread([r.cpu / r.pages for r in group], '{:.2f}')} | {cpu / local_cpu:.3f} |")
    print("\nCPU-s per page by part (medians): *batch command* the `digitize batch` process (in-process: with its "
          "pool and page workers); *workers* the queue workers (Celery, pool processes, page workers), then the same "
          "by process: *main* Celery's main process(es) (consumer, timers, pool parent: one per service), *pool* "
          "the pool processes (run_job: fetch, ledger, store, index), *page* the page workers (conversion); "
          "*servers* Redis, MinIO, PostgreSQL.\n")
    print("| pipeline | slots | batch command | workers | main | pool | page | servers |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (kind, procs), group in groups.items():
        parts = {k: statistics.median(r.cpu_parts.get(k, 0.0) / r.pages for r in group)
                 for k in ("batch", "workers", "servers", *(f"workers:{role}" for role in ROLES))}
        print(f"| {label(kind, procs)} | {procs} | {parts['batch']:.3f} | {parts['workers']:.3f} | "
              f"{parts['workers:main']:.4f} | {parts['workers:pool']:.4f} | {parts['workers:page']:.3f} | "
              f"{parts['servers']:.3f} |")
    queued = [(kind, procs, g) for (kind, procs), g in groups.items() if kind != "local"]
    if queued:
        print("\nWhere a queued batch's time goes (ledger timestamps, medians over rounds): *submit* first to last "
              "job enqueued; *first start* until a worker began the first; *busy* pool processes' share of the "
              "span spent in tasks; *gap* between one process's tasks; *tail* span end minus the mean of the "
              "processes' last finish (end imbalance); *command start* from the `digitize batch` launch to the first "
              "job enqueued (interpreter, imports, connections); *command end* from the last job's end to the "
              "command's exit (the waiter's poll, the report).\n")
        print("| workers | span s | submit s | first start s | busy | gap ms | tail s | command start s | "
              "command end s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for kind, procs, group in queued:
            t = {k: statistics.median(r.timeline[k] for r in group) for k in group[0].timeline}
            print(f"| {label(kind, procs)} | {t['span']:.1f} | {t['submit']:.2f} | {t['first_start']:.2f} | "
                  f"{t['busy'] * 100:.1f} % | {t['gap_ms']:.0f} | {t['tail']:.2f} | {t['start']:.2f} | "
                  f"{t['end']:.2f} |")
    print()
    by_round = {(r.kind, r.processes, r.round): r for r in runs}
    for kind, procs, _ in queued:
        same = [(by_round[(kind, procs, r.round)], r) for r in groups.get(("local", procs), [])]
        if same:
            extra = [(q.seconds / loc.seconds - 1) * 100 for q, loc in same]
            cpu = [((q.cpu / q.pages) / (loc.cpu / loc.pages) - 1) * 100 for q, loc in same]
            print(f"{label(kind, procs)} vs local batch --jobs {procs}, paired by round: "
                  f"time {median_spread(extra, '{:+.1f}')} %, CPU per page {median_spread(cpu, '{:+.1f}')} % "
                  "(target <= 5 %)")
    one = groups.get(("queue", 1))
    for kind in ("queue", "services"):
        two = groups.get((kind, 2))
        if one and two:
            ratios = [by_round[(kind, 2, r.round)].ppm / r.ppm for r in one]
            work = [by_round[(kind, 2, r.round)].work_ppm / r.work_ppm for r in one]
            of_medians = statistics.median(r.ppm for r in two) / statistics.median(r.ppm for r in one)
            work_medians = statistics.median(r.work_ppm for r in two) / statistics.median(r.work_ppm for r in one)
            print(f"{label(kind, 2)} / worker x1 pages/min, paired by round: batch {median_spread(ratios, '{:.2f}')}x, "
                  f"workers' span {median_spread(work, '{:.2f}')}x; ratio of the medians: batch {of_medians:.2f}x, "
                  f"workers' span {work_medians:.2f}x (target >= 1.8x)")
    l1, l2 = groups.get(("local", 1)), groups.get(("local", 2))
    if l1 and l2:
        ratios = [by_round[("local", 2, r.round)].ppm / r.ppm for r in l1]
        print(f"in-process batch --jobs 2 / --jobs 1 pages/min (the machine's own scaling): "
              f"{median_spread(ratios, '{:.2f}')}x")
    print("\nCPU-s/page: CPU time of the run's processes (batch, workers, page workers, Redis, MinIO, PostgreSQL), "
          "not wall time: comparable on a busy machine.")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "queue_bench.json").write_text(json.dumps({
        "label": args.label, "files": args.files, "pages": args.pages, "probe_ms": overhead,
        "dispatch": {f"{kind}{procs}": d for (kind, procs), d in dispatched.items()},
        "runs": [dataclasses.asdict(r) for r in runs]}, indent=2))

if __name__ == "__main__":
    main()
