#!/usr/bin/env python3
"""What a page costs in a fresh fork of the warm converter against a worker that lives on (issue 13's speed).

Every ``digitize run`` reads its pages in a page worker forked for that run from a fork of the
resident converter (zygote_server.py), so every page pays a fresh process: copy-on-write faults
on the warm parent's memory, a heap grown and zero-filled from nothing, cold caches. This measures
that price without the rest of a run: one process warms up as the converter does
(``zygote_server.warm_up``), then reads every page of a set twice, in alternating rounds:

- **fork**: each file in a fresh fork of the warm parent, as a run's page worker reads it;
- **kept**: every file in one fork that reads them all, as a page worker kept across runs would.

CPU seconds per file (user and kernel, from ``getrusage`` of the reaped children), medians over
the rounds. The pages' text and the PDFs are the same either way; only where the CPU goes differs.

    .venv/bin/python bench/fork_cost_bench.py --samples /tmp/unseen789 --rounds 3
    .venv/bin/python bench/fork_cost_bench.py --set hard
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETS = {"easy": ROOT / "samples", "hard": ROOT / "samples" / "hard"}
sys.path.insert(0, str(ROOT))


def _read(files: list[Path], tmp: Path) -> None:
    from digitize import convert
    from digitize.sources import open_source

    opts = convert.ConvertOptions(jobs=1, validate=False)
    for path in files:
        with open_source(path, opts) as src:
            for i in range(src.page_count):
                convert.process_page(src.page(i), i + 1, tmp / f"{path.stem}-{i}.pdf", opts)


def _in_child(files: list[Path], tmp: Path) -> tuple[float, float]:
    """User and kernel CPU seconds of a forked child that reads FILES."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from digitize.pageworkers import small_pages

            small_pages()  # as a page worker
            _read(files, tmp)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"a child reading {[f.name for f in files]} failed")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="hard", choices=sorted(SETS))
    parser.add_argument("--samples", type=Path, help="a folder with samples.json instead of --set")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    folder = (args.samples or SETS[args.set]).resolve()
    files = [folder / s["name"] for s in json.loads((folder / "samples.json").read_text(encoding="utf-8"))["samples"]]
    from digitize import imaging, zygote_server

    zygote_server.warm_up("vie+eng")
    imaging.single_threaded()
    gc.freeze()  # as the converter does before it forks
    load = os.getloadavg()[0]
    split: dict[str, list[tuple[float, float]]] = {"fork": [], "kept": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            forked = [_in_child([path], Path(tmp)) for path in files]
            split["fork"].append((sum(u for u, _ in forked), sum(s for _, s in forked)))
            split["kept"].append(_in_child(files, Path(tmp)))
    print(f"{folder} ({len(files)} files), {args.rounds} rounds; 1-min load {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after\ncommand: " + shlex.join([Path(sys.executable).name, *sys.argv]) + "\n")
    print("| page worker | user CPU s/file | kernel CPU s/file | sum | rounds (sum) |")
    print("|---|---|---|---|---|")
    for name, rounds in split.items():
        user = statistics.median(u for u, _ in rounds) / len(files)
        kernel = statistics.median(s for _, s in rounds) / len(files)
        sums = " / ".join(f"{(u + s) / len(files):.3f}" for u, s in rounds)
        print(f"| {name} | {user:.3f} | {kernel:.3f} | **{user + kernel:.3f}** | {sums} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
