#!/usr/bin/env python3
"""Where a page's CPU goes, in-process, for one or more checkouts side by side (issue 13's speed).

Each page of a sample set runs through ``convert.process_page`` in one Python process per checkout
(no veraPDF, no resident servers, no process start: the per-page work only), and every Tesseract
call is logged with its purpose (``vie`` psm 3 = the first reading; psm 6 = a re-read of a block
or of sideways lines; another language = the re-read of unsure words; ``osd``), image size and CPU
seconds. Prints per file: CER (pdftotext of the page PDFs, as bench/convert_bench.py scores),
process CPU, Tesseract CPU and its calls, for each checkout; checkouts alternate --repeat times,
so a machine loaded by others slows them alike (CPU seconds still rise under load: compare
within one run). Seconds to a minute per set and checkout on a quiet 2-core machine.

    .venv/bin/python bench/page_cpu_bench.py --set hard
    .venv/bin/python bench/page_cpu_bench.py --set hard --code /path/to/main --code . --repeat 2
    .venv/bin/python bench/page_cpu_bench.py --set hard --code main=/path/to/main --code new=. --repeat 3
    .venv/bin/python bench/page_cpu_bench.py --samples /tmp/unseen-hard --code main=/path/to/main --code new=.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETS = {"easy": ROOT / "samples", "hard": ROOT / "samples" / "hard"}


def worker(folder: Path, only: set[str]) -> dict:
    """Runs with PYTHONPATH = the checkout under test: its digitize is imported."""
    from digitize import convert, imaging, ocr, pageworkers, tesslib
    from digitize.accuracy import page_cers
    from digitize.sources import open_source

    calls: list[tuple[str, int, str, float]] = []
    hocr, orientation = tesslib.Engine.hocr, tesslib.Engine.orientation

    def logged_hocr(self, pixels, dpi, psm, timeout):
        start = time.process_time()
        try:
            return hocr(self, pixels, dpi, psm, timeout)
        finally:
            calls.append((self.language, psm, f"{pixels.shape[1]}x{pixels.shape[0]}", time.process_time() - start))

    def logged_orientation(self, pixels, dpi):
        start = time.process_time()
        try:
            return orientation(self, pixels, dpi)
        finally:
            calls.append(("osd", 0, f"{pixels.shape[1]}x{pixels.shape[0]}", time.process_time() - start))

    tesslib.Engine.hocr, tesslib.Engine.orientation = logged_hocr, logged_orientation
    imaging.single_threaded()
    getattr(pageworkers, "small_pages", lambda: None)()  # as a page worker (a checkout from before it: huge pages)
    ocr.warm("vie+eng", orientation=True)
    opts = convert.ConvertOptions(jobs=1, validate=False)
    files = {}
    for sample in json.loads((folder / "samples.json").read_text(encoding="utf-8"))["samples"]:
        if only and sample["name"] not in only:
            continue
        calls.clear()
        with tempfile.TemporaryDirectory(prefix="page-cpu-") as tmp:
            start = time.process_time()
            with open_source(folder / sample["name"], opts) as src:
                for i in range(src.page_count):
                    convert.process_page(src.page(i), i + 1, Path(tmp) / f"p{i:05d}.pdf", opts)
            cpu = time.process_time() - start
            text = "\f".join(subprocess.run(["pdftotext", "-enc", "UTF-8", str(p), "-"], capture_output=True)
                             .stdout.decode("utf-8", "replace").rstrip("\f") for p in sorted(Path(tmp).glob("p*.pdf")))
        truth = (folder / sample["truth"]).read_text(encoding="utf-8")
        files[sample["name"]] = {"cpu": cpu, "cers": page_cers(truth, text), "calls": list(calls)}
    return files


def run_checkout(code: Path, folder: Path, only: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_THREAD_LIMIT": "1"}
    done = subprocess.run([sys.executable, __file__, "--worker", str(folder), "--only", only],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{code}: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return json.loads(done.stdout)


def _calls(calls: list) -> str:
    """First reading's CPU, then each extra call as language/psm: CPU."""
    parts = [f"{c[3]:.2f}" if (c[0], c[1]) == ("vie", 3) else f"{c[0]}/{c[1]}: {c[3]:.2f}" for c in calls]
    return ", ".join(parts)


def table(names: list[str], runs: dict[str, list[dict]]) -> str:
    head = ["file"] + [f"{n} {what}" for n in names for what in ("CER", "CPU s", "Tesseract s")] + \
        [f"{names[-1]} Tesseract calls"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    files = list(runs[names[0]][0])
    totals = {n: [0.0, 0.0, []] for n in names}
    for f in files:
        cells = [f]
        for n in names:
            cpu = statistics.median(r[f]["cpu"] for r in runs[n])
            tess = statistics.median(sum(c[3] for c in r[f]["calls"]) for r in runs[n])
            cers = runs[n][0][f]["cers"]
            cells += [" ".join(f"{c:.4f}" for c in cers), f"{cpu:.2f}", f"{tess:.2f}"]
            totals[n][0] += cpu
            totals[n][1] += tess
            totals[n][2] += cers
        cells.append(_calls(runs[names[-1]][0][f]["calls"]))
        rows.append("| " + " | ".join(cells) + " |")
    cells = ["**sum / mean CER**"]
    for n in names:
        cpu, tess, cers = totals[n]
        cells += [f"**{statistics.mean(cers):.4f}**", f"**{cpu:.2f}**", f"**{tess:.2f}**"]
    rows.append("| " + " | ".join(cells + [""]) + " |")
    rows.append("\nbeside Tesseract (CPU s - Tesseract s, summed; Tesseract's own CPU varies most between runs): "
                + ", ".join(f"{n} {totals[n][0] - totals[n][1]:.2f}" for n in names))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="hard", choices=sorted(SETS))
    parser.add_argument("--code", action="append", metavar="[NAME=]CHECKOUT",
                        help="checkout to measure (default: this one); repeat for side by side")
    parser.add_argument("--repeat", type=int, default=1, help="runs per checkout, alternating (median CPU)")
    parser.add_argument("--only", default="", help="comma-separated sample names")
    parser.add_argument("--samples", type=Path, help="a folder with samples.json instead of --set: e.g. the hard "
                        "set's generators with another seed, unseen")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, set(filter(None, args.only.split(","))))))
        return 0
    names, codes = [], []
    for spec in args.code or [str(ROOT)]:
        # NAME=PATH as run_cpu_bench.py takes it: a bare "main=/x" was once read as a path that does not
        # exist, and the worker then imported the venv's installed digitize instead of the checkout's
        name, _, path = spec.rpartition("=") if not Path(spec).is_dir() else ("", "", spec)
        code = Path(path).resolve()
        if not (code / "digitize" / "__init__.py").is_file():
            parser.error(f"--code {spec}: {code} is not a checkout (no digitize/__init__.py)")
        names.append(name or code.name)
        codes.append(code)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    folder = args.samples.resolve() if args.samples else SETS[args.set]
    load = os.getloadavg()[0]
    for _ in range(args.repeat):
        for name, code in zip(names, codes):
            runs[name].append(run_checkout(code, folder, args.only))
    print(f"{args.samples or args.set} set, in-process page work (no veraPDF, no process start); 1-min load {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after\ncommand: " + shlex.join([Path(sys.executable).name, *sys.argv]) + "\n")
    print(table(names, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
