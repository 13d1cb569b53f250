"""CPU per request of the portal's access path, this code and a base tree side by side (on demand, never CI).

    .venv/bin/python bench/portal_gate_bench.py [--base /work/main] [--requests 1000] [--rounds 3]

Serves a small cached data dir (``~/.cache/digitize-bench/portal-gate``: 500 case records of one agency and
an officer token, no files) with a real ``digitize serve`` from this tree and from ``--base``, alternately
(A B A B ..., so drifting load on the machine hits both alike), and drives each with bench/loadgen (two
clients, bench/portal_bench.py's driver): ``case`` = ``GET /api/v1/cases/ID`` (the access dependency: an
archive from the pool and the token's lookup, then the case's two reads and its access event) and
``healthz`` (no dependency, no index). Measured: the server processes' CPU time per request (psutil, user +
system), which other load on the machine changes far less than wall time; read the ratio of the two trees
taken in one run, not the absolute numbers; and the CPU of one thread-pool hop, measured in process (what
the access dependencies' move off the event loop adds). Prints a markdown table and the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import portal_bench  # noqa: E402
from portal_bench import BENCH_CACHE, drive, percentile  # noqa: E402

from digitize.config import Settings  # noqa: E402
from storage import access  # noqa: E402
from storage.archive import Archive  # noqa: E402
from storage.models import CaseRecord  # noqa: E402

AGENCY = "000.00.31.H56"
CASES = 500
DATA_VERSION = 1


def case_id(n: int) -> str:
    return f"{AGENCY}-241015-{n + 1:04d}"


def cached_dataset(rebuild: bool) -> Path:
    """The data dir and its token (``token``, 0600), built once (they hold no real person's data)."""
    folder = BENCH_CACHE / "portal-gate"
    stamp = folder / "key.json"
    key = {"cases": CASES, "version": DATA_VERSION}
    if stamp.is_file() and json.loads(stamp.read_text()) == key and not rebuild:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
    with Archive.open(Settings(data_dir=str(folder / "data"))) as archive:
        for n in range(CASES):
            archive.index.upsert_case(CaseRecord(case_id(n), procedure_code="1.004616", agency=AGENCY,
                                                 applicant=f"Nguyễn Văn {n}", received_date="2024-10-15"))
        token = access.create_token(archive.index, "bench", "officer", [AGENCY])
    (folder / "token").touch(mode=0o600)
    (folder / "token").write_text(token)
    stamp.write_text(json.dumps(key))
    return folder


@contextlib.contextmanager
def served_from(tree: Path, data: Path, work: Path):
    """``digitize serve`` of ``tree`` (its code on PYTHONPATH) over a fresh copy of the data dir."""
    copy = work / f"data-{random.randint(0, 10**9)}"
    shutil.copytree(data, copy, symlinks=True)
    port = 18000 + random.randint(0, 999)
    saved, portal_bench.ROOT = portal_bench.ROOT, tree  # portal_bench.serve runs the code of its ROOT
    try:
        process = portal_bench.serve(Settings(data_dir=str(copy)), port, work / "serve.log")
    finally:
        portal_bench.ROOT = saved
    try:
        yield process, port
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(copy, ignore_errors=True)


def plan(kind: str, count: int) -> str:
    rng = random.Random(7)
    paths = {"healthz": lambda: "/healthz", "case": lambda: f"/api/v1/cases/{case_id(rng.randrange(CASES))}"}
    return "".join(f"{kind}\t{paths[kind]()}\n" for _ in range(count))


def hop_cpu(count: int = 20_000) -> float:
    """CPU microseconds of one event loop -> worker thread -> event loop hop (Starlette's run_in_threadpool),
    what moving the account lookup off the event loop adds to a request (in this process, no server)."""
    import asyncio
    import time

    from starlette.concurrency import run_in_threadpool

    async def hops() -> float:
        for _ in range(500):
            await run_in_threadpool(lambda: None)
        start = time.process_time()
        for _ in range(count):
            await run_in_threadpool(lambda: None)
        return (time.process_time() - start) / count * 1e6

    return asyncio.run(hops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path("/work/main"), help="the other code tree")
    parser.add_argument("--requests", type=int, default=1000, help="requests per kind, server and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    folder = cached_dataset(args.rebuild)
    token = (folder / "token").read_text().strip()
    trees = {"this": ROOT, "base": args.base.resolve()}
    cpu: dict[tuple[str, str], list[float]] = {}
    latency: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp:
        for _ in range(args.rounds):
            for label, tree in trees.items():
                with served_from(tree, folder / "data", Path(tmp)) as (process, port):
                    drive(process, port, token, plan("case", 200), 2, 200, 60)  # warm up
                    for kind in ("case", "healthz"):
                        r = drive(process, port, token, plan(kind, args.requests), 2, args.requests, 300)
                        stats = r.kinds[kind]
                        done = len(stats["latency_ms"])
                        if done != args.requests or set(stats["status"]) != {"200"}:
                            raise SystemExit(f"{label} {kind}: {stats['status']} {stats['errors']} errors")
                        cpu.setdefault((label, kind), []).append(1000 * r.server_cpu / done)
                        latency.setdefault((label, kind), []).extend(stats["latency_ms"])
    print("| code | request | rounds x requests | server CPU ms/request (median of rounds) | p50 ms |")
    print("|---|---|---|---|---|")
    for (label, kind), values in sorted(cpu.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"| {label} ({trees[label]}) | {kind} | {args.rounds} x {args.requests} | "
              f"{statistics.median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)}) | "
              f"{percentile(latency[(label, kind)], 50):.1f} |")
    for kind in ("case", "healthz"):
        ratio = statistics.median(cpu[("this", kind)]) / statistics.median(cpu[("base", kind)])
        print(f"\n{kind}: this / base CPU per request = {ratio:.2f}", end="")
    print(f"\n\none thread-pool hop: {hop_cpu():.0f} us CPU (in process)", end="")
    print("\n\ncommand: " + shlex.join([Path(sys.executable).name, "bench/portal_gate_bench.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
