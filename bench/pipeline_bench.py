#!/usr/bin/env python3
"""Pipeline benchmark (on demand, not in CI): does ``batch`` keep 2 cores busy, and what does bookkeeping cost?

Over the same folder (default ``samples/``), one run each:

1. ``digitize run FILE --jobs 1`` for every file, one after another: the single-worker baseline.
   Its pages/min counts conversion time only (from the JSON report), not Python start-up, so the
   baseline is the strictest one.
2. ``digitize batch SRC --jobs 2`` into a fresh embedded archive (folder store + SQLite), wall clock.
3. OCRmyPDF (``-l vie --rotate-pages --deskew --output-type pdfa --jobs 1``), two files at a time.

Targets (issue 4): batch pages/min >= 90 % of 2 x single-worker pages/min; bookkeeping overhead
(time in jobs that is not conversion: hashing, QR scan, store, verify, index) <= 5 %.

    .venv/bin/python bench/pipeline_bench.py                    # table on stdout, JSON in bench/results/
    .venv/bin/python bench/pipeline_bench.py --no-ocrmypdf --src /data/scans --manifest /data/scans.csv
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.inbox import has_scan_suffix, iter_scans  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"


@dataclass
class Row:
    pipeline: str
    files: int
    failed: int
    pages: int
    seconds: float
    note: str = ""

    @property
    def pages_per_minute(self) -> float:
        return self.pages / self.seconds * 60 if self.seconds else 0.0


def _env(data_dir: Path, validate: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITIZE_")}
    env.update(DIGITIZE_CONFIG="/dev/null", DIGITIZE_DATA_DIR=str(data_dir),
               DIGITIZE_CONVERT_VALIDATE="true" if validate else "false")
    return env


def single_runs(files: list[Path], work: Path, validate: bool) -> Row:
    """Each file alone through ``digitize run --jobs 1``; seconds = sum of conversion times."""
    pages, seconds, failed = 0, 0.0, 0
    for n, path in enumerate(files):
        report = work / f"run-{n}.json"
        done = subprocess.run([str(VENV_BIN / "digitize"), "run", str(path), str(work / f"run-{n}.pdf"),
                               "--jobs", "1", "--report", str(report)],
                              env=_env(work / "unused", validate), capture_output=True, text=True)
        if done.returncode != 0:
            failed += 1
            continue
        data = json.loads(report.read_text(encoding="utf-8"))
        pages += data["page_count"]
        seconds += data["timings"]["total"]
    return Row("digitize run, 1 worker, file after file", len(files), failed, pages, seconds,
               "conversion time only (start-up excluded)")


def batch_run(src: Path, work: Path, jobs: int, validate: bool, manifest: Path | None) -> tuple[Row, dict]:
    report = work / "batch.json"
    extra = ["--manifest", str(manifest)] if manifest else []
    started = time.perf_counter()
    done = subprocess.run([str(VENV_BIN / "digitize"), "batch", str(src), "--jobs", str(jobs), "--report", str(report),
                           *extra], env=_env(work / "batch-data", validate), capture_output=True, text=True)
    if not report.exists():
        raise SystemExit(f"batch wrote no report: {done.stderr.strip().splitlines()[-1:]}")
    wall = time.perf_counter() - started
    data = json.loads(report.read_text(encoding="utf-8"))
    summary = data["summary"]
    row = Row(f"digitize batch --jobs {jobs} (store + index included)", summary["files"], summary["failed"],
              summary["pages"], wall, f"exit {done.returncode}, wall clock incl. start-up")
    return row, data


def ocrmypdf_runs(files: list[Path], work: Path, jobs: int) -> Row:
    def one(item: tuple[int, Path]) -> bool:
        n, path = item
        args = [str(VENV_BIN / "ocrmypdf"), "-l", "vie", "--rotate-pages", "--deskew", "--output-type", "pdfa",
                "--jobs", "1", "--image-dpi", "300", str(path), str(work / f"ocrmypdf-{n}.pdf")]
        return subprocess.run(args, capture_output=True).returncode == 0

    started = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        ok = list(pool.map(one, enumerate(files)))
    wall = time.perf_counter() - started
    pages = sum(_pdf_pages(work / f"ocrmypdf-{n}.pdf") for n, good in enumerate(ok) if good)
    return Row(f"OCRmyPDF, {jobs} files at a time", len(files), ok.count(False), pages, wall,
               "failed files (e.g. PNG with alpha) count no pages")


def _pdf_pages(path: Path) -> int:
    import pikepdf

    with pikepdf.open(path) as pdf:
        return len(pdf.pages)


def overhead(batch: dict) -> tuple[float, float, float]:
    """(seconds in jobs, of which conversion, share that is bookkeeping) from the batch's JSON report."""
    jobs = sum(f["seconds"] for f in batch["files"])
    convert = sum(f["convert_seconds"] for f in batch["files"])
    return jobs, convert, (jobs - convert) / jobs if jobs else 0.0


def table(rows: list[Row]) -> str:
    lines = ["| pipeline | files | failed | pages | seconds | pages/min | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    lines += [f"| {r.pipeline} | {r.files} | {r.failed} | {r.pages} | {r.seconds:.1f} | {r.pages_per_minute:.1f} | {r.note} |"
              for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT / "samples")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--validate", action="store_true", help="run veraPDF on every output (both sides)")
    parser.add_argument("--no-ocrmypdf", action="store_true")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="batch manifest (default SRC/manifest.csv if present; case IDs known -> no QR search)")
    parser.add_argument("--no-manifest", action="store_true", help="batch without a manifest: case IDs from QR/OCR")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pipeline_bench.json")
    args = parser.parse_args()

    files = [p for p in iter_scans(args.src) if has_scan_suffix(p)]
    default_manifest = args.src / "manifest.csv"
    manifest = None if args.no_manifest else args.manifest or (default_manifest if default_manifest.is_file() else None)
    work = Path(tempfile.mkdtemp(prefix="digitize-pipeline-bench-"))
    try:
        single = single_runs(files, work, args.validate)
        batch, batch_data = batch_run(args.src, work, args.jobs, args.validate, manifest)
        rows = [single, batch]
        if not args.no_ocrmypdf:
            rows.append(ocrmypdf_runs(files, work, args.jobs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    job_s, convert_s, share = overhead(batch_data)
    efficiency = batch.pages_per_minute / (args.jobs * single.pages_per_minute) if single.pages_per_minute else 0.0
    print(table(rows))
    print()
    print(f"parallel efficiency: batch {batch.pages_per_minute:.1f} pages/min = {efficiency:.0%} of "
          f"{args.jobs} x {single.pages_per_minute:.1f} (target >= 90 %)")
    print(f"bookkeeping overhead: {job_s - convert_s:.1f} s of {job_s:.1f} s in jobs = {share:.1%} (target <= 5 %)")
    print(f"manifest: {manifest or 'none (case IDs searched in QR codes and OCR text)'}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": [asdict(r) | {"pages_per_minute": r.pages_per_minute} for r in rows],
                                    "efficiency": efficiency, "overhead": share}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
