"""What a watcher's part-file sweep costs on a done/ tree of years of scans (review hard15 L3c): the previous
sweep read every folder at every start; the current one (digitize.fsutil.sweep_parts) reads only folders
changed in the last PART_RECENT (30 days) or holding subfolders. This builds a tree of FOLDERS case folders of
FILES scans each, all but RECENT of them unchanged for 40 days (cached under ~/.cache/digitize-bench, built
once), then runs both sweeps alternately in one run (so load on the machine hits both alike) and prints the
CPU (getrusage, this process) and wall per sweep and their ratios. A local disk with a warm cache: on an
SMB/NFS share each folder read is a round trip, so the gap is larger there. Seconds to run:

    PYTHONPATH=. .venv/bin/python bench/sweep_bench.py --folders 3000 --files 10 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import time
from pathlib import Path

from watch_record_bench import cpu_seconds  # bench/ is this script's folder

from digitize import fsutil

CACHE = Path(os.environ.get("DIGITIZE_BENCH_CACHE", Path.home() / ".cache/digitize-bench"))
# the sweep before review hard15 L3, for comparison only: every folder walked, our clock
_PREVIOUS_NAMES = re.compile(r"^\.(?:.+\.)?[0-9a-f]{12}\.part$|^\..+\.[a-z0-9_]{8}(?:\.[A-Za-z0-9]{1,16})?\.part$")


def previous_sweep(folder: Path, max_age: float = fsutil.PART_AGE) -> list[str]:
    removed, now = [], time.time()
    top = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for here, _, names, here_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in names:
                if not _PREVIOUS_NAMES.match(name):
                    continue
                info = os.stat(name, dir_fd=here_fd, follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and now - info.st_mtime >= max_age:
                    removed.append(os.path.join(here, name))  # counted, not removed: the tree is reused
    finally:
        os.close(top)
    return removed


def tree(folders: int, files: int, recent: int) -> Path:
    root = CACHE / f"sweep-tree-{folders}x{files}-{recent}"
    if (root / ".built").exists():
        return root / "done"
    old = time.time() - 40 * 86400
    for n in range(folders):
        case = root / "done" / f"000.00.31.H56-2410{n // 1000:02d}-{n % 10000:04d}"
        case.mkdir(parents=True, exist_ok=True)
        for k in range(files):
            (case / f"scan-{k}.pdf").write_bytes(b"%PDF-1.7\n%%EOF\n")
        if n >= recent:
            os.utime(case, (old, old))
    (root / ".built").write_text("")
    return root / "done"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=3000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--recent", type=int, default=20, help="case folders changed lately (read by both)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    done = tree(args.folders, args.files, args.recent)
    sweeps = {"previous (every folder)": lambda: previous_sweep(done),
              "current (recent folders)": lambda: fsutil.sweep_parts(done)}
    totals = {name: [0.0, 0.0] for name in sweeps}
    for name, sweep in sweeps.items():
        sweep()  # warm the dentry cache for both alike
    for _ in range(args.rounds):
        for name, sweep in sweeps.items():
            cpu, wall = cpu_seconds(), time.perf_counter()
            sweep()
            totals[name][0] += cpu_seconds() - cpu
            totals[name][1] += time.perf_counter() - wall
    base_cpu, base_wall = totals["previous (every folder)"]
    print(f"done/ tree: {args.folders} case folders x {args.files} files, {args.recent} changed lately; "
          f"{args.rounds} rounds each, alternating")
    print(f"{'sweep':<26} {'CPU ms/sweep':>13} {'wall ms/sweep':>14} {'CPU ratio':>10} {'wall ratio':>11}")
    for name, (cpu, wall) in totals.items():
        print(f"{name:<26} {1000 * cpu / args.rounds:>13.1f} {1000 * wall / args.rounds:>14.1f} "
              f"{cpu / base_cpu:>10.2f} {wall / base_wall:>11.2f}")
    print(f"command: PYTHONPATH=. .venv/bin/python bench/sweep_bench.py --folders {args.folders} "
          f"--files {args.files} --recent {args.recent} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
