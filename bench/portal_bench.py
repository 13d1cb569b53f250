"""Portal/API benchmark (on demand, never in CI): prints a markdown table.

    .venv/bin/python bench/portal_bench.py [--docs 100000] [--clients 50] [--requests 5000] [--skip-postgres]

For each index backend (SQLite, and PostgreSQL started from tests/servers.py), fills the index with
``--docs`` synthetic documents (bench/storage_bench.py's generator), stores ``--files`` real documents with a
``--pdf-kb`` PDF/A each in a folder store, starts a real ``digitize serve`` on loopback, and runs
``--clients`` concurrent API clients (one officer token, scoped to one agency, as the one-stop system would
be) mixing search (50 %), case view (30 %) and PDF/A download (20 %), bounded by ``--requests`` and
``--seconds``. Reports requests/s and p50/p95 latency per kind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402

from digitize.config import Settings  # noqa: E402
from storage import access  # noqa: E402
from storage.archive import Archive  # noqa: E402
from storage_bench import QUERY_SEEDS, case_id, fake_document, fill_index, percentile  # noqa: E402
from tests.servers import start_postgres  # noqa: E402

AGENCY = "000.00.31.H56"
FILE_CASE = f"{AGENCY}-241015-9999"


def prepare(settings: Settings, docs: int, files: int, pdf_kb: int, work: Path) -> str:
    """Index rows, real stored files, an officer token; returns the token."""
    with Archive.open(settings) as archive:
        rate = fill_index(archive.index, docs)
        print(f"  indexed {docs:,} documents ({rate:,.0f}/s)", file=sys.stderr)
        folder = work / "files"
        folder.mkdir(exist_ok=True)
        for i in range(files):
            original, pdfa, report, meta = fake_document(folder, i, pdf_kb * 1024, FILE_CASE)
            archive.store(original, pdfa, report, meta)
        return access.create_token(archive.index, "bench", "officer", [AGENCY])


def serve(settings: Settings, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITIZE_")}
    env.update(DIGITIZE_DATA_DIR=settings.data_dir, DIGITIZE_INDEX_DSN=settings.index_dsn, PYTHONPATH=str(ROOT))
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "digitize", "serve", "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
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


async def load(url: str, token: str, docs: int, files: int, clients: int, requests: int,
               seconds: float) -> tuple[dict[str, list[float]], float, int]:
    rng = random.Random(5)
    in_scope = [case_id(i) for i in range(min(docs, 20_000)) if case_id(i).startswith(AGENCY)]
    timings: dict[str, list[float]] = {"search": [], "case": [], "pdfa": []}
    errors = 0
    budget = iter(range(requests))
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for _ in budget:
            if time.monotonic() > deadline:
                return
            roll = rng.random()
            if roll < 0.5:
                kind, path = "search", "/search?q=" + rng.choice(QUERY_SEEDS)
            elif roll < 0.8:
                kind, path = "case", "/cases/" + rng.choice(in_scope)
            else:
                kind, path = "pdfa", f"/cases/{FILE_CASE}/documents/{rng.randint(1, files)}/pdfa"
            t = time.perf_counter()
            r = await http.get(path)
            await r.aread()
            timings[kind].append((time.perf_counter() - t) * 1000)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url + "/api/v1", headers={"authorization": f"Bearer {token}"},
                                 limits=limits, timeout=60) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    return timings, wall, errors


def run(label: str, settings: Settings, args, work: Path) -> list[str]:
    print(f"{label}: preparing", file=sys.stderr)
    token = prepare(settings, args.docs, args.files, args.pdf_kb, work)
    port = 18000 + random.randint(0, 999)
    process = serve(settings, port, work / "serve.log")
    try:
        timings, wall, errors = asyncio.run(load(f"http://127.0.0.1:{port}", token, args.docs, args.files,
                                                 args.clients, args.requests, args.seconds))
    finally:
        process.terminate()
        process.wait(30)
    total = sum(len(v) for v in timings.values())
    rows = [f"| {label} | all | {total} | {total / wall:.1f} | | | {errors} |"]
    for kind, values in timings.items():
        if values:
            rows.append(f"| {label} | {kind} | {len(values)} | {len(values) / wall:.1f} | "
                        f"{percentile(values, 50):.1f} | {percentile(values, 95):.1f} | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--pdf-kb", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    rows = ["| index | kind | requests | req/s | p50 ms | p95 ms | errors |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="digitize-portal-bench-") as tmp:
        work = Path(tmp)
        (work / "sqlite").mkdir()
        rows += run("SQLite", Settings(data_dir=str(work / "sqlite" / "data")), args, work / "sqlite")
        if not args.skip_postgres:
            server = start_postgres()
            try:
                settings = Settings(data_dir=str(work / "pg" / "data"))
                settings.index.dsn = server.create_database("portal_bench")
                (work / "pg").mkdir()
                rows += run("PostgreSQL", settings, args, work / "pg")
            finally:
                server.stop()
    print(f"\n{args.docs:,} documents, {args.clients} concurrent clients, {args.pdf_kb} KB PDF/A downloads\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
