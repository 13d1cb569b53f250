#!/usr/bin/env python3
"""Fresh draws of one hard-set fault, page CPU and CER for checkouts side by side (issue 13).

Each draw is ``samples/hard/make_samples.py --seed N`` (made once, kept under
~/.cache/digitize-bench/draws); its page of the chosen fault goes through ``convert.process_page``
in one Python process per checkout (no veraPDF, no process start), and the table gives per seed the
kept reading's CER (against the draw's truth, on the page's text), the page's CPU seconds and its
``ocr_preparation`` for each checkout, with totals. Made for the typewriter page on the border of
strokes in pieces (read once or twice: convert.SURE_READING); a minute or two a checkout for 30 seeds.

    .venv/bin/python bench/border_bench.py --code main=/path/to/main --code new=. --seeds 1-30
    .venv/bin/python bench/border_bench.py --fault h10_fax_fine --seeds 1-10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRAWS = Path.home() / ".cache" / "digitize-bench" / "draws"


def worker(fault: str, folders: list[str]) -> None:
    """Runs with PYTHONPATH = the checkout under test; prints one JSON line per page."""
    import tempfile
    import time

    from digitize import convert, imaging, ocr
    from digitize.accuracy import cer
    from digitize.sources import open_source

    imaging.single_threaded()
    ocr.warm("vie+eng", orientation=True)
    opts = convert.ConvertOptions(jobs=1, validate=False)
    for folder in map(Path, folders):
        for sample in json.loads((folder / "samples.json").read_text(encoding="utf-8"))["samples"]:
            if not sample["name"].startswith(fault):
                continue
            truth = (folder / sample["truth"]).read_text(encoding="utf-8")
            with tempfile.TemporaryDirectory() as tmp, open_source(folder / sample["name"], opts) as src:
                start = time.process_time()
                reports = convert.process_page(src.page(0), 1, Path(tmp) / "p.pdf", opts)
                cpu = time.process_time() - start
            text = "\n".join(r.text for r in reports)
            print(json.dumps({"draw": folder.name, "cer": cer(truth, text), "cpu": cpu,
                              "preparation": ",".join(r.ocr_preparation for r in reports)}), flush=True)


def seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out += range(int(low), int(high or low) + 1)
    return out


def draw(seed: int) -> Path:
    folder = DRAWS / f"seed{seed}"
    if not (folder / "samples.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "samples" / "hard" / "make_samples.py"), "--seed", str(seed),
                        "--out", str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", metavar="[NAME=]CHECKOUT", help="default: this checkout")
    parser.add_argument("--seeds", default="1-30", help="e.g. 1-30 or 2,5,9-12")
    parser.add_argument("--fault", default="h05_typewriter", help="the sample name's start")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.fault, args.worker)
        return
    folders = [str(draw(s)) for s in seeds(args.seeds)]
    codes = {}
    for spec in args.code or ["."]:
        name, _, path = spec.rpartition("=")
        path = Path(path).resolve()
        codes[name or path.name] = path
    results: dict[str, dict[str, dict]] = {}
    for name, path in codes.items():
        run = subprocess.run([sys.executable, __file__, "--fault", args.fault, "--worker", *folders],
                             env={**os.environ, "PYTHONPATH": str(path)}, cwd=path, check=True,
                             capture_output=True, text=True)
        rows = [json.loads(line) for line in run.stdout.splitlines() if line]
        results[name] = {row["draw"]: row for row in rows}
    print(f"{args.fault}, seeds {args.seeds}; 1-min load {os.getloadavg()[0]:.2f} at the end\n")
    print("| draw | " + " | ".join(f"{n} CER | {n} CPU s | {n} preparation" for n in codes) + " |")
    print("|---" * (1 + 3 * len(codes)) + "|")
    for folder in folders:
        key = Path(folder).name
        cells = [results[n].get(key) for n in codes]
        if any(c is None for c in cells):
            continue
        print(f"| {key} | " + " | ".join(f"{c['cer']:.4f} | {c['cpu']:.2f} | {c['preparation'] or '-'}" for c in cells)
              + " |")
    totals = []
    for n in codes:
        rows = list(results[n].values())
        totals.append(f"**{sum(r['cer'] for r in rows) / max(1, len(rows)):.4f}** (worst "
                      f"{max((r['cer'] for r in rows), default=0):.4f}) | **{sum(r['cpu'] for r in rows):.1f}** |")
    print("| **mean CER / CPU sum** | " + " | ".join(totals) + " |")


if __name__ == "__main__":
    main()
