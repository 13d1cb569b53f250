"""Run ``digitize run`` over files it has never seen and sort the outcomes (issue 13's robustness set).

Each file is converted on its own (veraPDF on) with a time limit, and counted as:

- **valid**: exit 0 and a report that says veraPDF passed the output as PDF/A-2b;
- **refused**: a non-zero exit with exactly one line on stderr, ``digitize: ...``, and not an internal
  error (exit 15);
- **internal**: exit 15 (``internal error``): a bug, whatever the file;
- **noisy**: any other stderr (a traceback, several lines) or a zero exit without a valid output;
- **hang**: still running at ``--timeout`` (killed).

A file that is not a scan (a GIF, an icon, a corrupt PNG) is expected to be refused; what must never
happen is internal, noisy or hang. ``--machine`` adds image and PDF files found on this machine
(Go's image test data with the PNG suite, documentation PDFs and pictures: other people's files, in
formats and variants nobody wrote for digitize).

    .venv/bin/python bench/robustness_sweep.py --machine
    .venv/bin/python bench/robustness_sweep.py /path/to/files --jobs 2 --timeout 300

It prints a table per file and a summary, and exits 1 when any file was internal, noisy or a hang.
On demand only, never in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = {".pdf", ".tif", ".tiff", ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".jp2"}
MACHINE_FOLDERS = ("/usr/local/go/src/image", "/usr/share/doc", "~/go/pkg/mod/github.com/minio",
                   "~/.rustup/toolchains", "/usr/lib/google-cloud-sdk/platform/gsutil/third_party")
MACHINE_MAX_FILES = 200
BAD = ("internal", "noisy", "hang")


@dataclass
class Outcome:
    path: Path
    kind: str
    seconds: float
    code: int | None
    line: str


def machine_files(limit: int = MACHINE_MAX_FILES) -> list[Path]:
    """Image and PDF files under MACHINE_FOLDERS, at most 20 MB each, sorted, at most LIMIT (icons
    of one theme folder thinned to a few)."""
    found: list[Path] = []
    for folder in MACHINE_FOLDERS:
        base = Path(folder).expanduser()
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            picked = [Path(dirpath, n) for n in sorted(filenames) if Path(n).suffix.lower() in SUFFIXES]
            for path in picked[:40]:
                try:
                    if path.is_file() and not path.is_symlink() and path.stat().st_size <= 20 << 20:
                        found.append(path)
                except OSError:
                    continue
    return found[:limit]


def classify(code: int | None, stderr: str, report: Path) -> tuple[str, str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if code is None:
        return "hang", first
    if code == 15 or "internal error" in stderr:
        return "internal", first
    if "Traceback" in stderr:
        return "noisy", first
    if code == 0:
        try:
            compliant = json.loads(report.read_text(encoding="utf-8"))["pdfa"]["compliant"]
        except (OSError, ValueError, KeyError, TypeError):
            compliant = None
        return ("valid", "") if compliant is True else ("noisy", first or "no valid PDF/A output")
    if len(lines) == 1 and first.startswith("digitize: "):
        return "refused", first
    return "noisy", first


def convert(path: Path, out: Path, timeout: float, command: list[str]) -> Outcome:
    report = out.with_suffix(".json")
    start = time.perf_counter()
    proc = subprocess.Popen([*command, "run", "--report", str(report), str(path), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        _, err = proc.communicate()
        code = None
    text = err.decode("utf-8", "replace")
    kind, line = classify(code, text, report)
    return Outcome(path, kind, time.perf_counter() - start, code, line)


def table(outcomes: list[Outcome]) -> str:
    rows = ["| file | outcome | exit | s | first line of stderr |", "|---|---|---|---|---|"]
    for o in outcomes:
        line = o.line.replace("|", "\\|")[:160]
        rows.append(f"| {os.fsencode(o.path).decode('utf-8', 'backslashreplace')} | {o.kind} | "
                    f"{'-' if o.code is None else o.code} | {o.seconds:.1f} | {line} |")
    counts = {kind: sum(o.kind == kind for o in outcomes) for kind in ("valid", "refused", *BAD)}
    rows.append("")
    rows.append(f"{len(outcomes)} files: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files or folders (searched recursively)")
    parser.add_argument("--machine", action="store_true", help="add image and PDF files found on this machine")
    parser.add_argument("--jobs", type=int, default=2, help="files at a time")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a run counts as a hang")
    parser.add_argument("--digitize", default=str(ROOT / ".venv" / "bin" / "digitize"), help="the command to run")
    args = parser.parse_args(argv)
    files = machine_files() if args.machine else []
    for path in args.paths:
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        parser.error("no files: give paths or --machine")
    os.environ["PYTHONPATH"] = str(ROOT)  # this checkout's code, whatever the venv's editable install says
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        work = [(p, Path(tmp, f"{n:05d}.pdf")) for n, p in enumerate(files)]
        with ThreadPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(lambda job: convert(*job, args.timeout, [args.digitize]), work))
    print(table(outcomes))
    return 1 if any(o.kind in BAD for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
