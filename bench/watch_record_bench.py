"""What the claim's move record costs a watcher (review hard15): before a scan's sidecar leaves its claim, the
claim saves where it goes and the sidecar's SHA-256 (one small synced write), so that a crash between the two
moves can be put right. This moves N scan+sidecar pairs out of claims into done/, alternately with and without
the record, in one run (so load on the machine hits both alike), and prints CPU (getrusage, this process) and
wall per move and their ratios. No fixtures to cache: each pair is a 200 KB random file and a tiny sidecar in a
temp inbox. Seconds to run:

    PYTHONPATH=. .venv/bin/python bench/watch_record_bench.py --moves 200
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path, PurePath

from digitize.config import Settings
from pipelines import watch


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=200)
    args = parser.parse_args()
    totals = {"with record": [0.0, 0.0], "without": [0.0, 0.0]}
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "inbox"
        inbox.mkdir(mode=0o750)
        watcher = watch.Watcher(watch.WatchOptions(inbox, stable_seconds=0.0), Settings(data_dir=f"{tmp}/data"))
        recorder = watcher.claims.recorder
        try:
            for i in range(args.moves):
                for label in totals:
                    name = f"scan{i}-{label[:4]}.pdf"
                    (inbox / name).write_bytes(os.urandom(200_000))
                    (inbox / f"{name}.json").write_text('{"title": "x"}')
                    claim = watcher.claims.take(watcher.folders.inbox, PurePath(name), f"{name}.json")
                    watcher.claims.recorder = recorder if label == "with record" else (lambda claim, to: None)
                    cpu, wall = cpu_seconds(), time.perf_counter()
                    watcher._move_out(claim, watcher.folders.done)
                    totals[label][0] += cpu_seconds() - cpu
                    totals[label][1] += time.perf_counter() - wall
        finally:
            watcher.folders.close()
    print("| moves | variant | CPU ms/move | wall ms/move |\n|---:|---|---:|---:|")
    for label, (cpu, wall) in totals.items():
        print(f"| {args.moves} | {label} | {1000 * cpu / args.moves:.2f} | {1000 * wall / args.moves:.2f} |")
    (cpu_with, wall_with), (cpu_without, wall_without) = totals.values()
    print(f"\nwith/without: CPU {cpu_with / cpu_without:.2f}x, wall {wall_with / wall_without:.2f}x")
    print(f"command: PYTHONPATH=. {sys.executable} bench/watch_record_bench.py --moves {args.moves}")


if __name__ == "__main__":
    main()
