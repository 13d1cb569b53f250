#!/usr/bin/env python3
"""What handing a page's report back from its page worker costs, for checkouts side by side.

Each checkout runs in its own Python (PYTHONPATH = the checkout). It keeps its page workers, as a
batch worker does, and runs files of pages whose task does no page work: it returns a page's report
as convert builds it (OCR text of a dense page, timings, the paper found; page 1 with its top band
for the signature mark). What is timed is therefore the channel alone: the pool's dispatch, the
result's encoding (a pickle before review rev16ipc, a wire.py frame since), the pipe and the parent's
decoding. Prints per page: wall ms, the parent's CPU ms and the workers' CPU ms, medians of --repeat
runs alternating between checkouts (a loaded machine slows them alike; compare within one run), and,
where the checkout has digitize/wire.py, the encode+decode round trip of one report against pickle's.
A real page costs 1-3 CPU-s; a few seconds per checkout.

    .venv/bin/python bench/page_channel_bench.py --code main=/path/to/main --code new=. --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = "Cộng hòa xã hội chủ nghĩa Việt Nam Độc lập Tự do Hạnh phúc Quyết định số 127 về việc cấp giấy phép"


def report(number: int, chars: int):
    """A page's report as a page worker hands it back (no page work at all)."""
    import numpy as np

    from digitize.records import PageReport

    text = (WORDS + "\n") * (chars // (len(WORDS) + 1))
    return [PageReport(number, 2480, 3508, 300.0, "file", "colour", 0, -0.35, "ocr", 88.42, len(text.split()),
                       "jpeg", 412345, text=text, warnings=[],
                       timings={"geometry": 0.21, "preparation": 0.05, "ocr": 1.4, "encode": 0.12, "total": 1.8},
                       paper={"action": "crop", "box": [12, 9, 2470, 3500], "edge_angle": 0.2, "size": [2458, 3491]},
                       ocr_preparation="", top_band=np.full((200, 595), 250, np.uint8) if number == 1 else None)]


def _worker_cpu(pool) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for worker in pool.workers:
        pid = getattr(worker, "process", worker).pid  # this checkout's _Worker, or main's executor process
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def measure(files: int, pages: int, processes: int, chars: int) -> dict:
    """Runs with PYTHONPATH = the checkout under test."""
    import pickle

    from digitize import pageworkers
    from digitize.records import PageReport  # noqa: F401 - the parent knows the type it reads back

    pageworkers.keep()
    tasks = [(n, chars) for n in range(1, pages + 1)]
    pageworkers.run(report, tasks, processes, 600.0)  # forks and warms the workers
    worker_cpu, cpu, wall = _worker_cpu(pageworkers._kept), time.process_time(), time.perf_counter()
    for _ in range(files):
        pageworkers.run(report, tasks, processes, 600.0)
    n = files * pages
    out = {"wall": (time.perf_counter() - wall) / n * 1e3, "cpu": (time.process_time() - cpu) / n * 1e3,
           "workers": (_worker_cpu(pageworkers._kept) - worker_cpu) / n * 1e3}
    value = report(2, chars)
    start = time.perf_counter()
    for _ in range(200):
        pickle.loads(pickle.dumps(value))
    out["pickle_us"] = (time.perf_counter() - start) / 200 * 1e6
    try:
        from digitize import wire
    except ImportError:
        return out
    start = time.perf_counter()
    for _ in range(200):
        frame = wire.result_frame(value)
        text, size = wire.sizes(frame[:wire.HEADER.size])
        body = bytearray(frame[wire.HEADER.size:])
        wire.read_frame(memoryview(body)[:text], memoryview(body)[text:])
    out["wire_us"] = (time.perf_counter() - start) / 200 * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", action="append", metavar="NAME=CHECKOUT", help="checkout to measure; repeat")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files", type=int, default=50, help="files per run")
    parser.add_argument("--pages", type=int, default=8, help="pages per file")
    parser.add_argument("--jobs", type=int, default=1, help="page workers")
    parser.add_argument("--chars", type=int, default=3000, help="characters of OCR text per page")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.files, args.pages, args.jobs, args.chars)))
        return 0
    codes = {}
    for spec in args.code or [f"this={ROOT}"]:
        name, _, path = spec.partition("=")
        if not (Path(path) / "digitize" / "__init__.py").is_file():
            parser.error(f"--code {spec}: not NAME=CHECKOUT")
        codes[name] = Path(path).resolve()
    runs: dict[str, list[dict]] = {name: [] for name in codes}
    load = os.getloadavg()[0]
    for _ in range(args.repeat):
        for name, code in codes.items():
            env = {**os.environ, "PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}
            command = [sys.executable, str(Path(__file__).resolve()), "--measure", "--files", str(args.files),
                       "--pages", str(args.pages), "--jobs", str(args.jobs), "--chars", str(args.chars)]
            done = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout))
    print(f"{args.files} files x {args.pages} pages, {args.jobs} page worker(s), {args.chars} characters a page; "
          f"1-min load {load:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| checkout | wall ms/page | parent CPU ms/page | workers' CPU ms/page | pickle round trip µs | "
          "wire round trip µs |\n|---|---|---|---|---|---|")
    for name, results in runs.items():
        cells = [statistics.median(r.get(key, float("nan")) for r in results)
                 for key in ("wall", "cpu", "workers", "pickle_us", "wire_us")]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" if c < 10 else f"{c:.0f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
