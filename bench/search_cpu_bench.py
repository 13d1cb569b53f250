"""CPU of a search the cache has not seen, in process, this code and a base tree side by side (on demand).

    .venv/bin/python bench/search_cpu_bench.py [--base /work/main] [--queries 300] [--rounds 3]
                                               [--backend sqlite|postgresql] [--profile out.prof]

Runs ``Gate.search`` (storage/access.py: scope, filters, paging, snippets; the portal's and the API's
path without HTTP) for an officer of one agency and for an archivist, on bench/portal_bench.py's cached
100 000-document data set (``$DIGITIZE_BENCH_CACHE/portal-100000``, built by that bench), with queries
that are all distinct (random word pairs and triples, as its ``search-miss`` row) and the search cache
emptied before each one. Each tree runs in its own child process (``PYTHONPATH`` = the tree), the trees
alternate round by round (A B A B ..., so drifting load hits both alike); measured: CPU time of the
process (``time.process_time``: this process's user + system, plus PostgreSQL's backend for
``postgresql``) per search, median over the rounds, and the ratio. Read the ratio, not the absolute
numbers, on a busy machine. ``--profile FILE``: a cProfile of this tree's searches (``python -m pstats``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENCY = "000.00.31.H56"


def queries(n: int, seed: int) -> list[str]:
    sys.path.insert(0, str(ROOT / "bench"))
    from storage_bench import WORDS

    rng = random.Random(seed)
    return [" ".join(rng.sample(WORDS, rng.randint(2, 3))) for _ in range(n)]


def child(args) -> None:
    """Run in a child process whose PYTHONPATH is the tree measured: print {role: CPU ms per search}."""
    import psutil

    from digitize.config import Settings
    from storage import access
    from storage.archive import Archive

    settings = Settings(data_dir=args.data)
    if args.dsn:
        settings.index.dsn = args.dsn
    out = {}
    with Archive.open(settings) as archive:
        if archive.index.dialect == "sqlite" and hasattr(archive.index, "map_for_reads"):
            archive.index.map_for_reads()  # as the portal's readers do (web/app.py)
        db = None
        if archive.index.dialect == "postgresql":
            db = psutil.Process(archive.index._scalar("SELECT pg_backend_pid()"))
        profile = None
        if args.profile:
            import cProfile
            profile = cProfile.Profile()
        for role, agencies in (("officer", (AGENCY,)), ("archivist", ())):
            gate = access.Gate(archive, access.Principal("bench", role, agencies, "token"))
            qs = queries(args.queries, args.seed)
            for q in qs[:10]:  # warm the connection and the page cache
                gate.search(q)
            access.SEARCH_CACHE.clear()
            t, d = time.process_time(), db.cpu_times() if db else None
            if profile:
                profile.enable()
            for q in qs[10:]:
                access.SEARCH_CACHE.clear()
                gate.search(q)
            if profile:
                profile.disable()
            used = time.process_time() - t
            if db:
                now = db.cpu_times()
                used += (now.user - d.user) + (now.system - d.system)
            out[role] = 1000 * used / (len(qs) - 10)
        if profile:
            profile.dump_stats(args.profile)
    print(json.dumps(out))


def data_dir(backend: str, work: Path) -> tuple[str, str | None, object]:
    """A working copy of the cached data set (SQLite: the index file; PostgreSQL: a restored database)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from portal_bench import BENCH_CACHE

    cached = BENCH_CACHE / "portal-100000" / backend
    if not (cached / "key.json").is_file():
        raise SystemExit(f"no cached data set in {cached}: run bench/portal_bench.py --cpu-only once to build it")
    if backend == "sqlite":
        shutil.copytree(cached / "data", work / "data", symlinks=True)
        return str(work / "data"), None, None
    from tests.servers import start_postgres

    pg = start_postgres()
    dsn = pg.create_database("search_cpu")
    subprocess.run([str(pg.bin_dir / "pg_restore"), "--no-owner", "-j", "2", "-d", dsn, str(cached / "pg.dump")],
                   check=True)
    subprocess.run([str(pg.bin_dir / "psql"), "-q", "-c", "ANALYZE", dsn], check=True)
    shutil.copytree(cached / "data", work / "data", symlinks=True)
    return str(work / "data"), dsn, pg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="another code tree measured alternately (e.g. /work/main)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--profile", help="cProfile output of this tree's searches")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    trees = ([("base", args.base.resolve())] if args.base else []) + [("this", ROOT)]
    results: dict[str, list[dict]] = {name: [] for name, _ in trees}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="digitize-search-cpu-") as tmp:
        data, dsn, pg = data_dir(args.backend, Path(tmp))
        try:
            for r in range(args.rounds):
                for name, tree in trees:
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--data", data,
                           "--queries", str(args.queries), "--seed", str(args.seed + r)]
                    if dsn:
                        cmd += ["--dsn", dsn]
                    if args.profile and name == "this" and r == 0:
                        cmd += ["--profile", args.profile]
                    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITIZE_")}
                    got = subprocess.run(cmd, env={**env, "PYTHONPATH": str(tree)}, cwd=tree, capture_output=True,
                                         text=True)
                    if got.returncode:
                        raise SystemExit(f"{name} failed: {got.stderr.strip()}")
                    results[name].append(json.loads(got.stdout.strip().splitlines()[-1]))
        finally:
            if pg is not None:
                pg.stop()
    print(f"\n$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{args.backend}, 100 000 documents, {args.queries - 10} distinct searches per role and round, "
          f"{args.rounds} rounds, load average before {load[0]:.1f} (CPU: this process"
          f"{' + its PostgreSQL backend' if dsn else ''})\n")
    print("| role | " + " | ".join(f"{name} CPU ms / search" for name, _ in trees)
          + (" | this / base |" if args.base else " |"))
    print("|---|" + "---|" * (len(trees) + (1 if args.base else 0)))
    for role in ("officer", "archivist"):
        medians = [statistics.median(run[role] for run in results[name]) for name, _ in trees]
        ratio = f" | {medians[-1] / medians[0]:.2f} |" if args.base else " |"
        print(f"| {role} | " + " | ".join(f"{m:.2f}" for m in medians) + ratio)


if __name__ == "__main__":
    main()
