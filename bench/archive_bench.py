#!/usr/bin/env python3
"""Issue 13's hard archive pages, one per fault, generated (own texts, DejaVu/Liberation Mono
fonts, exact ground truth): CER per fault and per-stage time of `digitize`, optionally beside
bare Tesseract and OCRmyPDF on the same PNGs. On demand only; a minute for digitize alone.

    PYTHONPATH=. .venv/bin/python bench/archive_bench.py [--baselines] [--keep DIR]

Bare Tesseract reads the PNG as it is (`tesseract -l vie`); OCRmyPDF runs with
`--rotate-pages --deskew`; their text is their .txt / pdftotext. A spread's truth is two
pages: engines that give one page are scored against both pages' text joined.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from digitize.accuracy import cer, page_cers  # noqa: E402
from digitize.convert import ConvertOptions, convert_file  # noqa: E402
from tests.pages import (DEJAVU_SANS, DEJAVU_SERIF, DPI, LEDGER_LINES, REGISTER_LINES, book_spread,  # noqa: E402
                         carbon_copy, on_background, photographed, render_with, show_through, typewritten)


def faults() -> dict[str, tuple]:
    register = render_with(REGISTER_LINES, DEJAVU_SERIF)
    ledger = render_with(LEDGER_LINES, DEJAVU_SANS, font_px=32)
    reg, led = "\n".join(REGISTER_LINES), "\n".join(LEDGER_LINES)
    return {
        "dark lid, skew 6°": (on_background(register, 6.0, seed=11), [reg]),
        "dark cover, colour, −9°": (on_background(ledger, -9.0, colour=True, seed=12), [led]),
        "phone photo (keystone)": (photographed(ledger, tilt=0.06, seed=13), [led]),
        "book spread on a cover": (on_background(book_spread(register, ledger), 1.5, seed=14), [reg, led]),
        "show-through 45 %": (show_through(register, ledger, 0.45), [reg]),
        "carbon copy": (carbon_copy(ledger, seed=15), [led]),
        "typewriter": (typewritten(REGISTER_LINES, seed=1), [reg]),
    }


def score(truth: list[str], text: str) -> float:
    pages = [p for p in text.split("\f") if p.strip()]
    if len(pages) != len(truth):
        return cer("\n".join(truth), text.replace("\f", "\n"))
    return max(page_cers("\f".join(truth), "\f".join(pages)))


def run_tesseract(png: Path) -> tuple[str, float]:
    t = time.perf_counter()
    out = subprocess.run(["tesseract", str(png), "-", "-l", "vie"], capture_output=True, text=True,
                         env={**os.environ, "OMP_THREAD_LIMIT": "1"}, timeout=300)
    return out.stdout, time.perf_counter() - t


def run_ocrmypdf(png: Path, folder: Path) -> tuple[str | None, float | str]:
    exe = Path(sys.executable).parent / "ocrmypdf"
    pdf = folder / (png.stem + ".ocrmypdf.pdf")
    t = time.perf_counter()
    done = subprocess.run([str(exe), "-q", "-l", "vie", "--rotate-pages", "--deskew", "--image-dpi", str(int(DPI)),
                           "--output-type", "pdfa", str(png), str(pdf)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    took = time.perf_counter() - t
    if not pdf.exists():
        return None, (done.stderr.strip().splitlines() or ["failed"])[-1]
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True).stdout
    return text, took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baselines", action="store_true", help="also bare Tesseract and OCRmyPDF")
    ap.add_argument("--keep", type=Path, help="write the generated PNGs and outputs here")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="archive-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    head = "| fault | pages | digitize CER | geometry s | OCR s | encode s | page total s |"
    if args.baselines:
        head += " tesseract CER | s | OCRmyPDF CER | s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for i, (name, (pixels, truth)) in enumerate(faults().items()):
        png = folder / f"{i:02d}.png"
        Image.fromarray(pixels).save(png, dpi=(DPI, DPI))
        report = convert_file(png, folder / f"{i:02d}.pdf", ConvertOptions(jobs=1, validate=False))
        split = {k: sum(p.timings.get(k, 0.0) for p in report.pages) for k in ("geometry", "preparation", "ocr", "encode", "total")}
        split["ocr"] += split.pop("preparation")  # this table's OCR column: OCR image preparation + Tesseract
        row = (f"| {name} | {report.page_count} | {score(truth, report.text):.4f} | {split['geometry']:.2f} "
               f"| {split['ocr']:.2f} | {split['encode']:.2f} | {split['total']:.2f} |")
        if args.baselines:
            text, took = run_tesseract(png)
            row += f" {score(truth, text):.4f} | {took:.1f} |"
            text, took = run_ocrmypdf(png, folder)
            row += f" {score(truth, text):.4f} | {took:.1f} |" if text is not None else f" failed: {took} | |"
        print(row, flush=True)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
