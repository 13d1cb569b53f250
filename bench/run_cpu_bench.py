#!/usr/bin/env python3
"""CPU of one warm ``digitize run`` beyond its pages, split by process, for checkouts side by side (issue 13).

A one-page ``digitize run`` with veraPDF on is three processes' work: the ``digitize`` client (Python's
start, the light imports of launcher.py/zygote.py, the settings, the hand-over), the resident
converter's child with its page worker (the run itself: pages, PDF, report) and the resident
validator (the veraPDF check). Each checkout gets its own private server folder; the first run
(cold servers) is left out, then runs alternate between checkouts, so a machine loaded by others
slows them alike. CPU comes from ``getrusage`` (client) and ``/proc`` (the converter's reaped
children, the validator JVM), never wall time: on a loaded machine compare within one run.

    .venv/bin/python bench/run_cpu_bench.py --code main=/path/to/main --code new=. --runs 10
    .venv/bin/python bench/run_cpu_bench.py --sample samples/hard/h09_carbon_copy.jpg --code .
    .venv/bin/python bench/run_cpu_bench.py --set hard --code main=/path/to/main --code new=. --runs 2
    .venv/bin/python bench/run_cpu_bench.py --samples /tmp/unseen789 --code . --runs 1

With ``--set easy|hard`` (or ``--samples DIR``: any folder with a samples.json) every file of that set
is run once per round (file by file, the checkouts alternating on each file), and the table gives CPU
seconds per page summed over the set (means, not medians), the converter's split into user and kernel
time (page faults, forks) beside it.

The default sample is a blank A4 page at 200 dpi (made once, kept under
~/.cache/digitize-bench/run-cpu): no text to read, so what is measured is the run's own cost
(start, hand-over, geometry of an empty page, PDF/A, report, veraPDF check), which a page's OCR
would otherwise drown in noise on a loaded machine.

Bytecode is read from ~/.cache/digitize-bench/pycache (``PYTHONPYCACHEPREFIX``, as convert_bench.py:
an installed package has its .pyc); the checkouts' modules are compiled into it first. The servers
this starts are stopped at the end (SIGTERM to the pids in their lock files that still hold
descriptors in the bench's own server folders).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("DIGITIZE_BENCH_CACHE", Path.home() / ".cache" / "digitize-bench"))
PYCACHE = CACHE / "pycache"
PARTS = ("client", "converter", "validator")
SETS = {"easy": ROOT / "samples", "hard": ROOT / "samples" / "hard"}


def _cpu_of(pid: int, reaped_children: bool) -> float | None:
    """CPU seconds of a process (or of its children it has waited for), from /proc/PID/stat."""
    split = _cpu_split(pid, reaped_children)
    return None if split is None else sum(split)


def _cpu_split(pid: int, reaped_children: bool) -> tuple[float, float] | None:
    """(user, kernel) CPU seconds of a process or of its reaped children, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    first = 13 if reaped_children else 11  # cutime, cstime / utime, stime (0-based after the name)
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[first]) / tick, int(fields[first + 1]) / tick


def _servers(folder: Path) -> dict[str, int]:
    """{kind: pid} of the resident servers whose lock files are in FOLDER."""
    found = {}
    for lock in folder.glob("*.lock"):
        try:
            pid = int(lock.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid:
            found[lock.name.split("-")[0]] = pid
    return found


def _serves_from(pid: int, folder: Path) -> bool:
    """Whether process PID holds a descriptor in FOLDER (its log, socket folder): a server of ours."""
    try:
        return any(os.readlink(fd).startswith(str(folder)) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _blank_page() -> Path:
    """A white A4 page at 200 dpi (PNG), made once."""
    path = CACHE / "run-cpu" / "blank-a4-200dpi.png"
    if not path.is_file():
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (1654, 2339), 255).save(path.with_suffix(".tmp.png"), dpi=(200, 200))
        os.replace(path.with_suffix(".tmp.png"), path)
    return path


EXTRA_ENV: dict[str, dict[str, str]] = {}  # --env NAME:VAR=VALUE, per checkout name


def _one_run(code: Path, folder: Path, sample: Path, name: str = "") -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code), "DIGITIZE_VALIDATOR_DIR": str(folder), "OMP_THREAD_LIMIT": "1",
           "PYTHONPYCACHEPREFIX": str(PYCACHE), **EXTRA_ENV.get(name, {})}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = {kind: _cpu_split(pid, kind == "converter") for kind, pid in _servers(folder).items()}
    start = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([str(VENV_BIN / "digitize"), "run", "--jobs", "1", str(sample), str(folder / "out.pdf")],
                   env=env, check=True)
    end = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {"client": end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime}
    for kind, pid in _servers(folder).items():
        now = _cpu_split(pid, kind == "converter")
        if now is not None and before.get(kind) is not None:
            cpu[kind] = sum(now) - sum(before[kind])
            if kind == "converter":
                cpu["converter sys"] = now[1] - before[kind][1]
    return cpu


def _set_files(folder: Path) -> list[tuple[Path, int]]:
    """(file, pages) of a sample set, from its samples.json."""
    index = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
    return [(folder / s["name"], int(s.get("page_count", 1))) for s in index["samples"]]


def _codes(specs: list[str]) -> dict[str, Path]:
    codes = {}
    for spec in specs or [str(ROOT)]:
        name, _, path = spec.rpartition("=")
        codes[name or Path(path).resolve().name] = Path(path).resolve()
    return codes


def _compile(codes: dict[str, Path]) -> None:
    trees = [str(c / p) for c in codes.values() for p in ("digitize", "storage", "pipelines") if (c / p).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *trees], env={**os.environ,
                   "PYTHONPYCACHEPREFIX": str(PYCACHE)}, stdout=subprocess.DEVNULL, check=False)


def _stop(folders: dict[str, Path]) -> None:
    for folder in folders.values():
        for pid in _servers(folder).values():
            if _serves_from(pid, folder):  # a stale lock's pid may be another process's by now
                try:
                    os.kill(pid, 15)
                except OSError:
                    pass


def _cold_run(code: Path, folder: Path, sample: Path, name: str) -> dict[str, float]:
    """The first run, which starts both servers: its client, and each server's CPU so far (the
    converter's own start and the child it forked; the validator JVM's start, warm-up and check)."""
    cpu = _one_run(code, folder, sample, name)
    for kind, pid in _servers(folder).items():
        own = _cpu_of(pid, False)
        if own is None:
            continue
        if kind == "validator":
            cpu["validator"] = own
        else:
            cpu[f"{kind} start"] = own
            cpu[kind] = _cpu_of(pid, True) or 0.0  # its reaped child (and that child's page worker)
    return cpu


def _print_cold(cold: dict[str, dict[str, float]], sample: str) -> None:
    print(f"\nThe cold first run ({sample}; not in the table above), CPU s: client / converter start (its own "
          "process) / converter's child + page worker / validator JVM (start, warm-up and this file's check) / sum")
    print("\n| checkout | client | converter start | converter's child | validator JVM | sum |")
    print("|---|---|---|---|---|---|")
    for name, cpu in cold.items():
        parts = [cpu.get(k, float("nan")) for k in ("client", "converter start", "converter", "validator")]
        print(f"| {name} | " + " | ".join(f"{p:.3f}" for p in parts) + f" | **{sum(parts):.3f}** |")


def _run_set(args) -> int:
    """Every file of a set per round, checkouts alternating file by file; CPU per page over the set."""
    codes = _codes(args.code)
    _compile(codes)
    files = _set_files(args.samples or SETS[args.set])
    folders = {name: Path(tempfile.mkdtemp(prefix=f"run-cpu-{name}-")) for name in codes}
    sums: dict[str, dict[str, float]] = {name: {} for name in codes}
    load = os.getloadavg()[0]
    try:
        cold = {name: _cold_run(code, folders[name], files[0][0].resolve(), name) for name, code in codes.items()}
        for _ in range(args.runs):
            for path, _pages in files:
                for name, code in codes.items():
                    for part, seconds in _one_run(code, folders[name], path.resolve(), name).items():
                        sums[name][part] = sums[name].get(part, 0.0) + seconds
    finally:
        _stop(folders)
    pages = args.runs * sum(p for _, p in files)
    print(f"{args.samples or args.set} set ({len(files)} files, {pages // args.runs} pages): "
          f"{args.runs} warm round(s), checkouts alternating file by file; 1-min load {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after\ncommand: "
          + shlex.join([Path(sys.executable).name, *sys.argv]) + "\n")
    print("| checkout | client CPU s/page | converter's child + page worker CPU s/page | of it kernel | "
          "validator CPU s/page | sum |")
    print("|---|---|---|---|---|---|")
    for name in codes:
        per = {part: sums[name].get(part, 0.0) / pages for part in (*PARTS, "converter sys")}
        print(f"| {name} | {per['client']:.3f} | {per['converter']:.3f} | {per['converter sys']:.3f} | "
              f"{per['validator']:.3f} | **{sum(per[p] for p in PARTS):.3f}** |")
    _print_cold(cold, files[0][0].name)
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", action="append", default=[], metavar="[NAME=]CHECKOUT",
                        help="checkout to measure (default: this one); repeat for side by side")
    parser.add_argument("--sample", type=Path, help="input file (default: a blank A4 page, see above)")
    parser.add_argument("--runs", type=int, default=8,
                        help="warm runs per checkout (median); rounds with --set or --samples")
    parser.add_argument("--set", choices=sorted(SETS), help="every file of a sample set per round (see above)")
    parser.add_argument("--samples", type=Path, help="a folder with samples.json instead of --set: e.g. an unseen "
                        "draw of the hard faults (bench/README.md)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME:VAR=VALUE",
                        help="an environment variable for one checkout's runs, e.g. main:DIGITIZE_CACHE=/dir "
                             "(another build of the validator jar: see bench/README.md)")
    args = parser.parse_args(argv)
    for spec in args.env:
        name, _, assignment = spec.partition(":")
        var, _, value = assignment.partition("=")
        EXTRA_ENV.setdefault(name, {})[var] = value
    if args.set or args.samples:
        return _run_set(args)
    args.sample = args.sample or _blank_page()
    codes = _codes(args.code)
    _compile(codes)
    folders = {name: Path(tempfile.mkdtemp(prefix=f"run-cpu-{name}-")) for name in codes}
    runs: dict[str, dict[str, list[float]]] = {name: {part: [] for part in PARTS} for name in codes}
    load = os.getloadavg()[0]
    try:
        for i in range(args.runs + 1):
            for name, code in codes.items():
                cpu = _one_run(code, folders[name], args.sample.resolve(), name)
                if i:  # the first run starts the servers: left out
                    for part, seconds in cpu.items():
                        runs[name].setdefault(part, []).append(seconds)
    finally:
        _stop(folders)
    print(f"{args.sample.name}: {args.runs} warm runs per checkout, alternating; 1-min load {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after\ncommand: " + shlex.join([Path(sys.executable).name, *sys.argv]) + "\n")
    print("| checkout | client CPU s | converter's child + page worker CPU s | validator CPU s | sum |")
    print("|---|---|---|---|---|")
    for name in codes:
        medians = [statistics.median(runs[name][p]) if runs[name][p] else float("nan") for p in PARTS]
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in medians) + f" | **{sum(medians):.3f}** |")
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
