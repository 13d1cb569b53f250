"""Portal/API benchmark (on demand, never in CI): prints markdown tables and the command that made them.

    .venv/bin/python bench/portal_bench.py [--docs 100000] [--clients 50] [--requests 5000] [--think-ms 2000]
                                           [--skip-postgres | --skip-sqlite] [--rebuild] [--cpu-only]
                                           [--base /path/to/other/tree] [--profile DIR]

For each index backend (SQLite, and PostgreSQL started from tests/servers.py) it serves a data dir with
``--docs`` synthetic documents in the index (bench/storage_bench.py's generator) and ``--files`` stored
documents with a ``--pdf-kb`` PDF/A each, built once and cached in ``~/.cache/digitize-bench/portal-*``
(rebuilt when the index migrations change); each run works on a copy. It starts a real ``digitize serve``
on loopback and drives it with bench/loadgen (a small Go program, built here with ``go build``, standard
library only), which uses one officer token scoped to one agency, as the one-stop system would, and mixes
search (50 %), case view (30 %) and PDF/A download (20 %). Measured, per backend:

* server CPU per request type: the CPU time of the server's processes (psutil, all workers) over a run of
  one request type with two clients, divided by its requests: independent of other load on the machine;
* **closed loop**: ``--clients`` clients sending back to back with no pause (saturation: latency is about
  clients / throughput, so this measures throughput more than what an officer waits);
* **think time**: the same clients, each pausing a random (exponential) ``--think-ms`` between requests,
  as officers at a counter click every few seconds;
* the load generator's own CPU time, beside the server's.

Searches repeat the storage bench's 23 query seeds, as desks repeat common words: after the first
round they are answered from the search cache (storage/access.py). The CPU table's ``search-miss`` row
sends searches that are all distinct (random word pairs and triples), so none is a cache hit: the cost of
a search the server has not seen. ``--base DIR`` serves another code tree (e.g. a worktree of main) on
the same data set in the same run, so the two are compared side by side, whatever the machine's load;
base runs first, on the freshly restored (cold) server, which favours the tree served second:
``--rounds 2`` (or more) alternates the order (as ``portal_ab.py`` does).

``--distinct-search`` makes the closed-loop and think-time searches distinct too.

``--cpu-only`` measures the first table alone (a minute per backend once the data set is cached): the number
to compare between versions of the code, since it hardly depends on how busy the machine is.

Transport errors and non-200 answers are counted per kind, never fatal.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psutil  # noqa: E402

from digitize.config import Settings  # noqa: E402
from storage import access  # noqa: E402
from storage.archive import Archive  # noqa: E402
from storage_bench import QUERY_SEEDS, WORDS, case_id, fake_document, fill_index, percentile  # noqa: E402
from tests.servers import start_postgres  # noqa: E402

AGENCY = "000.00.31.H56"
FILE_CASE = f"{AGENCY}-241015-9999"
KINDS = ("search", "case", "pdfa")
CPU_KINDS = (*KINDS, "search-miss")  # search-miss: every query distinct, never a cache hit
DATA_VERSION = 1  # bump when what prepare() stores changes
BENCH_CACHE = Path(os.environ.get("DIGITIZE_BENCH_CACHE", Path.home() / ".cache" / "digitize-bench"))
TOOL_CACHE = Path(os.environ.get("DIGITIZE_CACHE", Path.home() / ".cache" / "digitize")) / "bin"
LOADGEN_SRC = ROOT / "bench" / "loadgen"


# -- the data set, built once ---------------------------------------------------------------------
def cache_key(args) -> dict:
    """What a cached data set must match: its size, and the index schema (migration files) of this code."""
    migrations = sorted(p.name for p in (resources.files("storage") / "migrations").iterdir() if p.name.endswith(".sql"))
    return {"docs": args.docs, "files": args.files, "pdf_kb": args.pdf_kb, "version": DATA_VERSION,
            "migrations": migrations}


def prepare(settings: Settings, docs: int, files: int, pdf_kb: int, work: Path) -> None:
    """Index rows and real stored files (the token is made per run, on the copy)."""
    with Archive.open(settings) as archive:
        if archive.index.dialect == "sqlite":  # only while building the cache: a crash just means a rebuild
            archive.index.conn.execute("PRAGMA synchronous = OFF")
        rate = fill_index(archive.index, docs)
        print(f"  indexed {docs:,} documents ({rate:,.0f}/s)", file=sys.stderr)
        folder = work / "files"
        folder.mkdir(exist_ok=True)
        for i in range(files):
            original, pdfa, report, meta = fake_document(folder, i, pdf_kb * 1024, FILE_CASE)
            archive.store(original, pdfa, report, meta)
        shutil.rmtree(folder)


def pg_dump(pg, dsn: str, target: Path) -> None:
    subprocess.run([str(pg.bin_dir / "pg_dump"), "-Fc", "-Z1", "-f", str(target), dsn], check=True)


def pg_restore(pg, dsn: str, dump: Path) -> None:
    subprocess.run([str(pg.bin_dir / "pg_restore"), "--no-owner", "-j", "2", "-d", dsn, str(dump)], check=True)


def cached_dataset(backend: str, args, pg=None) -> Path:
    """The cache folder for ``backend`` (``sqlite``: a data dir; ``postgresql``: a data dir + pg.dump)."""
    key = cache_key(args)
    folder = BENCH_CACHE / f"portal-{args.docs}" / backend
    stamp = folder / "key.json"
    cached = json.loads(stamp.read_text()) if stamp.is_file() else None
    if cached == key and not args.rebuild:
        print(f"{backend}: cached data set {folder}", file=sys.stderr)
        return folder
    if cached and not args.rebuild and upgradable(cached, key):
        return upgrade(backend, folder, key, pg)
    print(f"{backend}: building the data set in {folder} (once; --rebuild forces it)", file=sys.stderr)
    shutil.rmtree(folder, ignore_errors=True)
    building = folder.with_name(folder.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    settings = Settings(data_dir=str(building / "data"))
    if backend == "postgresql":
        settings.index.dsn = pg.create_database("portal_build")
    t = time.perf_counter()
    prepare(settings, args.docs, args.files, args.pdf_kb, building)
    if backend == "postgresql":
        pg_dump(pg, settings.index.dsn, building / "pg.dump")
    (building / "key.json").write_text(json.dumps(key))
    building.rename(folder)
    print(f"  built in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return folder


def upgradable(cached: dict, key: dict) -> bool:
    """A cached set made before newer migrations: the same data, its schema a prefix of this code's."""
    old, new = cached.get("migrations", []), key["migrations"]
    same = {k: v for k, v in cached.items() if k != "migrations"} == {k: v for k, v in key.items() if k != "migrations"}
    return same and len(old) < len(new) and new[:len(old)] == old


def upgrade(backend: str, folder: Path, key: dict, pg=None) -> Path:
    """Migrate a cached set in place, as a deployment would (seconds, where a rebuild takes ~13 minutes)."""
    print(f"{backend}: migrating the cached data set {folder} to {key['migrations'][-1]}", file=sys.stderr)
    t = time.perf_counter()
    settings = Settings(data_dir=str(folder / "data"))
    if backend == "postgresql":
        settings.index.dsn = pg.create_database(f"portal_upgrade_{int(time.time())}")
        pg_restore(pg, settings.index.dsn, folder / "pg.dump")
    with Archive.open(settings):
        pass
    if backend == "postgresql":
        pg_dump(pg, settings.index.dsn, folder / "pg.dump.new")
        os.replace(folder / "pg.dump.new", folder / "pg.dump")
    (folder / "key.json").write_text(json.dumps(key))
    print(f"  migrated in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return folder


def working_copy(backend: str, cached: Path, work: Path, pg=None) -> Settings:
    settings = Settings(data_dir=str(work / "data"))
    shutil.copytree(cached / "data", work / "data", symlinks=True)
    if backend == "postgresql":
        settings.index.dsn = pg.create_database(f"portal_{int(time.time())}")
        pg_restore(pg, settings.index.dsn, cached / "pg.dump")
        # pg_restore leaves the planner without statistics: newest-first search then sorts every match
        # (~300 ms for a common word) instead of scanning the key backwards (~3 ms). A live index has
        # them from autovacuum; a freshly restored one gets them here, as PostgreSQL's docs advise.
        subprocess.run([str(pg.bin_dir / "psql"), "-q", "-c", "ANALYZE", settings.index.dsn], check=True)
    return settings


# -- server and load generator --------------------------------------------------------------------
def serve(settings: Settings, port: int, log: Path, code: Path = ROOT, main: list[str] | None = None,
          extra_env: dict | None = None) -> subprocess.Popen:
    """``digitize serve`` of the tree ``code``; ``main``: what runs instead of ``-m digitize`` (a probe)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITIZE_")}
    env.update(DIGITIZE_DATA_DIR=settings.data_dir, DIGITIZE_INDEX_DSN=settings.index_dsn, PYTHONPATH=str(code))
    env.update(extra_env or {})
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, *(main or ["-m", "digitize"]), "serve", "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, cwd=code)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit("digitize serve did not start: " + log.read_text())
            time.sleep(0.2)


def server_cpu(process: subprocess.Popen | int | None) -> float:
    """CPU seconds (user + system) of a server (Popen or pid) and all its child processes so far."""
    total = 0.0
    if process is None:
        return total
    try:
        procs = [psutil.Process(process if isinstance(process, int) else process.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return total
    for p in procs:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def loadgen_binary() -> Path:
    """bench/loadgen built with ``go build`` (standard library only: nothing is downloaded), cached."""
    target = TOOL_CACHE / "digitize-loadgen"
    sources = [p for p in LOADGEN_SRC.iterdir() if p.suffix in (".go", ".mod")]
    if target.is_file() and all(p.stat().st_mtime <= target.stat().st_mtime for p in sources):
        return target
    go = shutil.which("go")
    if go is None:
        raise SystemExit("the load generator needs Go to build it (bash scripts/setup.sh installs it)")
    TOOL_CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([go, "build", "-o", str(target), "."], cwd=LOADGEN_SRC, check=True)
    return target


def plan(docs: int, files: int, count: int, only: str | None = None, seed: int = 5, distinct: bool = False) -> str:
    """``count`` requests, one "KIND<TAB>PATH" a line: search 50 %, case view 30 %, PDF/A download 20 %;
    ``distinct``: every search a query of its own (random word pairs and triples), never a cache hit."""
    rng = random.Random(seed)
    distinct = distinct or only == "search-miss"
    in_scope = [case_id(i) for i in range(min(docs, 20_000)) if case_id(i).startswith(AGENCY)]
    lines = []
    for _ in range(count):
        roll = rng.random()
        kind = only or ("search" if roll < 0.5 else "case" if roll < 0.8 else "pdfa")
        if distinct and kind.startswith("search"):
            path = "/search?q=" + quote(" ".join(rng.sample(WORDS, rng.randint(2, 3))))
        elif kind == "search":
            path = "/search?q=" + quote(rng.choice(QUERY_SEEDS))
        elif kind == "case":
            path = "/cases/" + rng.choice(in_scope)
        else:
            path = f"/cases/{FILE_CASE}/documents/{rng.randint(1, files)}/pdfa"
        lines.append(f"{kind}\t/api/v1{path}")
    return "\n".join(lines) + "\n"


@dataclass
class Run:
    model: str
    wall: float
    kinds: dict
    server_cpu: float
    gen_cpu: float
    dropped: int = 0
    db_cpu: float = 0.0


def drive(process: subprocess.Popen, port: int, token: str, lines: str, clients: int, requests: int,
          seconds: float, think_ms: float = 0, db: int | None = None) -> Run:
    """One load-generator run; ``db``: the PostgreSQL postmaster's pid, whose CPU is counted apart."""
    args = [str(loadgen_binary()), "-url", f"http://127.0.0.1:{port}", "-clients", str(clients),
            "-requests", str(requests), "-seconds", str(seconds), "-think-ms", str(think_ms)]
    before, db_before = server_cpu(process), server_cpu(db)
    out = subprocess.run(args, input=lines, capture_output=True, text=True, env={**os.environ, "LOADGEN_TOKEN": token})
    used, db_used = server_cpu(process) - before, server_cpu(db) - db_before
    if out.returncode != 0:
        raise SystemExit(f"load generator failed: {out.stderr.strip()}")
    got = json.loads(out.stdout)
    return Run(got["model"], got["wall_s"], got["kinds"], used, got["cpu_user_s"] + got["cpu_sys_s"],
               got.get("dropped", 0), db_used)


def profiler(process: subprocess.Popen, folder: Path, label: str, model: str) -> subprocess.Popen:
    """py-spy sampling every server process (the venv's, else on PATH) into FOLDER/<label>-<model>.speedscope.json
    (open it at speedscope.app or in a local copy of it); non-blocking, so the server is not paused."""
    spy = Path(sys.executable).with_name("py-spy")
    spy = str(spy) if spy.is_file() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{label}-{model}".replace(" ", "-").lower()
    spy_process = subprocess.Popen([spy, "record", "--pid", str(process.pid), "--subprocesses", "--nonblocking",
                                    "--rate", "200", "--format", "speedscope", "-o", f"{target}.speedscope.json"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    return spy_process


def errors(stats: dict) -> int:
    return stats["errors"] + sum(n for code, n in stats["status"].items() if code != "200")


def postmaster_pid(pg) -> int | None:
    """The PostgreSQL server's pid (first line of postmaster.pid), to count its CPU beside ours."""
    try:
        return int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_backend(label: str, settings: Settings, args, db: int | None = None,
                code: Path = ROOT) -> tuple[list[str], list[str]]:
    with Archive.open(settings) as archive:
        token = access.create_token(archive.index, f"bench{random.randint(0, 10**6)}", "officer", [AGENCY])
    port = 18000 + random.randint(0, 999)
    log = Path(settings.data_dir).parent / "serve.log"
    process = serve(settings, port, log, code)
    cpu_rows, load_rows = [], []
    try:
        drive(process, port, token, plan(args.docs, args.files, 300, seed=1), 4, 300, 60)  # warm up
        for kind in CPU_KINDS:
            n = args.cpu_requests
            r = drive(process, port, token, plan(args.docs, args.files, n, kind, seed=2), 2, n, 120, db=db)
            stats = r.kinds[kind]
            done = max(len(stats["latency_ms"]), 1)
            db_ms = f"{1000 * r.db_cpu / done:.1f}" if db else "(in process)"
            cpu_rows.append(f"| {label} | {kind} | {done} | {1000 * r.server_cpu / done:.1f} | {db_ms} | "
                            f"{percentile(stats['latency_ms'], 50):.1f} | {errors(stats)} |")
        lines = plan(args.docs, args.files, args.requests, distinct=args.distinct_search)
        models = [] if args.cpu_only else [("closed loop", 0.0, args.requests, args.seconds)]
        if args.think_ms > 0 and not args.cpu_only:
            models.append((f"think {args.think_ms / 1000:g} s", args.think_ms, args.requests, args.think_seconds))
        for name, think, requests, seconds in models:
            spy = profiler(process, args.profile, label, name) if args.profile else None
            try:
                r = drive(process, port, token, lines, args.clients, requests, seconds, think, db=db)
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
                    spy.wait(60)
            total = sum(len(s["latency_ms"]) for s in r.kinds.values())
            errs = sum(errors(s) for s in r.kinds.values())
            db_share = f" + {r.db_cpu / r.wall * 100:.0f} % PostgreSQL" if db else ""
            load_rows.append(f"| {label} | {name} | all | {total} | {total / r.wall:.1f} | | | {errs} | "
                             f"{r.server_cpu / r.wall * 100:.0f} %{db_share} | {r.gen_cpu / r.wall * 100:.0f} % |")
            for kind in KINDS:
                values = r.kinds.get(kind, {}).get("latency_ms") or []
                if values:
                    load_rows.append(f"| {label} | {name} | {kind} | {len(values)} | {len(values) / r.wall:.1f} | "
                                     f"{percentile(values, 50):.1f} | {percentile(values, 95):.1f} | "
                                     f"{errors(r.kinds[kind])} | | |")
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    return cpu_rows, load_rows


def trees(backend: str, args) -> list[tuple[str, Path]]:
    """(label, code tree) to serve in turn on one working copy: with ``--base``, ``--rounds`` pairs in
    alternating order (base then this tree, this tree then base, ...): whichever runs first meets a cold
    server and cache, so one round favours the second tree (review r2pg L4)."""
    pair = ([(f"{backend} base", args.base.resolve())] if args.base else []) + [(backend, ROOT)]
    rounds = [pair if r % 2 == 0 else pair[::-1] for r in range(args.rounds)]
    return [(f"{label} r{r + 1}" if args.rounds > 1 else label, code)
            for r, order in enumerate(rounds) for label, code in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--pdf-kb", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5000, help="requests of the closed-loop and think-time runs")
    parser.add_argument("--seconds", type=float, default=120, help="longest closed-loop run")
    parser.add_argument("--think-ms", type=float, default=2000, help="mean think time (0: skip that model)")
    parser.add_argument("--think-seconds", type=float, default=60, help="length of the think-time run")
    parser.add_argument("--cpu-requests", type=int, default=200, help="requests per type for the CPU cost table")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached data sets")
    parser.add_argument("--cpu-only", action="store_true", help="only the server CPU per request type table")
    parser.add_argument("--distinct-search", action="store_true",
                        help="closed-loop and think-time searches all distinct (no search cache hits)")
    parser.add_argument("--base", type=Path, help="another code tree to serve too, side by side (e.g. main)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --base: rounds of the two trees, in alternating order (1: base first, favouring "
                             "this tree, served second on a warm server)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy every server process during the closed-loop and think-time runs into DIR")
    args = parser.parse_args()
    loadgen_binary()
    cpu_rows = ["| index | request | requests | server CPU ms / request | PostgreSQL CPU ms / request | "
                "p50 ms (2 clients) | errors |", "|---|---|---|---|---|---|---|"]
    load_rows = ["| index | client model | kind | requests | req/s | p50 ms | p95 ms | errors | server CPU | "
                 "loadgen CPU |", "|---|---|---|---|---|---|---|---|---|---|"]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="digitize-portal-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_sqlite:
            cached = cached_dataset("sqlite", args)
            (work / "sqlite").mkdir()
            settings = working_copy("sqlite", cached, work / "sqlite")
            for label, code in trees("SQLite", args):
                c, r = run_backend(label, settings, args, code=code)
                cpu_rows += c
                load_rows += r
        if not args.skip_postgres:
            server = start_postgres()
            try:
                cached = cached_dataset("postgresql", args, server)
                (work / "pg").mkdir()
                settings = working_copy("postgresql", cached, work / "pg", server)
                for label, code in trees("PostgreSQL", args):
                    c, r = run_backend(label, settings, args, postmaster_pid(server), code=code)
                    cpu_rows += c
                    load_rows += r
            finally:
                server.stop()
    print(f"\n$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{args.docs:,} documents, {args.clients} clients, {args.pdf_kb} KB PDF/A downloads, "
          f"{os.cpu_count()} cores, load average before {load[0]:.1f}; CPU % = share of one core\n")
    print("\n".join(cpu_rows))
    if not args.cpu_only:
        print()
        print("\n".join(load_rows))


if __name__ == "__main__":
    main()
