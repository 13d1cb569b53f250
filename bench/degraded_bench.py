#!/usr/bin/env python3
"""CER per fault on generated degraded pages (tests/degraded.py): digitize's OCR stage against
bare `tesseract` on the same image (300 dpi; a fax 204), with OCR passes and seconds per page.

On demand only. digitize is measured in-process (convert.recognise: preparation + OCR of an
upright page, the stage issue 13's "Degraded text" is about), so a page costs seconds, not a
full `digitize run`. Bare Tesseract is the command on the PNG (dpi stored), cached per page
under ~/.cache/digitize-bench/degraded (with the generated pages). Times are CPU-bound and
noisy on a shared machine: compare the ratio digitize/bare of one run, not absolute seconds.

    PYTHONPATH=. .venv/bin/python bench/degraded_bench.py --seeds 100-103      # held-out set
    PYTHONPATH=. .venv/bin/python bench/degraded_bench.py --seeds 1-3 --faults typewriter --variants
    PYTHONPATH=. .venv/bin/python bench/degraded_bench.py --seeds 100-103 --faults fax --cached-bare --without-streaks
    PYTHONPATH=. .venv/bin/python bench/degraded_bench.py --seeds 5-20 --faults fabric --cached-bare --measure-before
    PYTHONPATH=. .venv/bin/python bench/degraded_bench.py --seeds 21-48 --faults holey --cached-bare --unjoined
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import degraded  # noqa: E402
from digitize import convert, imaging, ocr, preparations  # noqa: E402
from digitize.accuracy import cer  # noqa: E402
from digitize.convert import ConvertOptions  # noqa: E402

CACHE = Path(os.environ.get("DIGITIZE_BENCH_CACHE", Path.home() / ".cache/digitize-bench")) / "degraded"
GENERATOR_VERSION = hashlib.sha256((ROOT / "tests/degraded.py").read_bytes()).hexdigest()[:10]


def page_file(fault: str, seed: int) -> tuple[Path, str]:
    folder = CACHE / GENERATOR_VERSION
    folder.mkdir(parents=True, exist_ok=True)
    png, txt = folder / f"{fault}-{seed}.png", folder / f"{fault}-{seed}.txt"
    if not png.exists():
        page = degraded.generate(fault, seed)
        Image.fromarray(page.pixels).save(png, dpi=(page.dpi, page.dpi))
        txt.write_text(page.truth, encoding="utf-8")
    return png, txt.read_text(encoding="utf-8")


def png_dpi(png: Path) -> float:
    return float(round(Image.open(png).info.get("dpi", (degraded.DPI,))[0]))


def bare(png: Path, language: str, image: np.ndarray | None = None, cached: bool = False,
         dpi: float = degraded.DPI) -> tuple[str, float]:
    """`tesseract PNG - -l LANG` (text, seconds); with ``cached``, the last run's (its seconds
    were taken under another load: no good for the time ratio)."""
    out = png.with_suffix(f".{language}.bare.txt")
    if image is None and cached and out.exists():
        return out.read_text(encoding="utf-8"), float(png.with_suffix(f".{language}.bare.s").read_text())
    src = png
    if image is not None:
        src = png.with_suffix(".variant.png")
        Image.fromarray(image).save(src, dpi=(dpi, dpi))
    t = time.perf_counter()
    text = subprocess.run(["tesseract", str(src), "-", "-l", language], capture_output=True, text=True,
                          env={**os.environ, "OMP_THREAD_LIMIT": "1"}, check=True).stdout
    seconds = time.perf_counter() - t
    if image is None:
        out.write_text(text, encoding="utf-8")
        png.with_suffix(f".{language}.bare.s").write_text(f"{seconds:.3f}")
    return text, seconds


class PassCounter:
    """Counts Tesseract calls made by digitize (page reads, re-reads of word strips)."""

    def __init__(self):
        self.calls = 0
        self._hocr = ocr._hocr

    def __enter__(self):
        def counted(*a, **k):
            self.calls += 1
            return self._hocr(*a, **k)
        ocr._hocr = counted
        return self

    def __exit__(self, *exc):
        ocr._hocr = self._hocr


def ours(pixels: np.ndarray, opts: ConvertOptions, dpi: float) -> tuple[str, float, int, str, float]:
    with PassCounter() as counter:
        t = time.perf_counter()
        result, preparation = convert.recognise(pixels, dpi, opts, "page")
        seconds = time.perf_counter() - t
    return result.text, seconds, counter.calls, preparation, result.confidence


class measure_before:
    """The letter measure as it was before the line-pitch check (imaging.PIECES out of reach)."""

    def __enter__(self):
        self.pieces, imaging.PIECES = imaging.PIECES, float("inf")

    def __exit__(self, *exc):
        imaging.PIECES = self.pieces


def seeds(spec: str) -> list[int]:
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="100-103", help="e.g. 1-3 (dev set) or 100-103 (held-out set)")
    ap.add_argument("--faults", default=",".join(degraded.FAULTS))
    ap.add_argument("--lang", default="vie+eng")
    ap.add_argument("--variants", action="store_true", help="also bare Tesseract on our prepared OCR image")
    ap.add_argument("--cached-bare", action="store_true", help="reuse bare Tesseract's last texts (CER only)")
    ap.add_argument("--without-streaks", action="store_true",
                    help="digitize without the streak removal (preparations.remove_streaks): the 'before' column")
    ap.add_argument("--measure-before", action="store_true",
                    help="also digitize with the letter measure before the line-pitch check (fragmented pages "
                         "only when smoothing raises it >= 1.75x), side by side: letter px and CER before -> after")
    ap.add_argument("--fragmented-scale", type=float, default=1.0,
                    help="an experiment: a page measured on its smoothed copy (strokes in pieces) counts as that "
                         "many times taller, so it is read smaller (1.25: letters at ~16 px)")
    ap.add_argument("--unjoined", action="store_true",
                    help="pages measured in pieces (imaging.measure_letters) also read without "
                         "imaging.join_fragments, side by side: CER unjoined -> joined")
    args = ap.parse_args()
    if args.fragmented_scale != 1.0:
        measure = imaging.fragmented_letter_height

        def scaled(*a):
            joined = measure(*a)
            return None if joined is None else joined * args.fragmented_scale
        imaging.fragmented_letter_height = scaled
    if args.without_streaks:
        preparations.remove_streaks = lambda grey, letter_px: grey
    opts = ConvertOptions(language=args.lang)
    imaging.single_threaded()
    ocr.warm(args.lang)
    rows, befores, unjoined = [], [], []
    print("| fault | seed | CER digitize | CER bare | passes | preparation, confidence | s digitize | s bare |"
          + (" CER bare-on-ours |" if args.variants else "")
          + (" letter px before -> after | CER before |" if args.measure_before else "")
          + (" in pieces | CER unjoined |" if args.unjoined else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if args.variants else "")
          + ("---|---|" if args.measure_before else "") + ("---|---|" if args.unjoined else ""))
    for fault in args.faults.split(","):
        for seed in seeds(args.seeds):
            png, truth = page_file(fault, seed)
            pixels, dpi = np.asarray(Image.open(png)), png_dpi(png)
            b_text, b_s = bare(png, args.lang, cached=args.cached_bare)
            o_text, o_s, passes, prep, conf = ours(pixels, opts, dpi)
            row = [fault, seed, cer(truth, o_text), cer(truth, b_text), passes, prep or "-", o_s, b_s]
            extra = ""
            if args.measure_before:
                after_px = imaging.measure_letter_height(imaging.drop_colour(pixels), dpi)
                with measure_before():
                    before_px = imaging.measure_letter_height(imaging.drop_colour(pixels), dpi)
                    before = cer(truth, ours(pixels, opts, dpi)[0]) if before_px != after_px else row[2]
                befores.append(before)
                extra += f" {before_px:.1f} -> {after_px:.1f} | {before:.4f} |"
            if args.unjoined:
                pieces = imaging.measure_letters(imaging.drop_colour(pixels), dpi)[1]
                before = row[2]
                if pieces:
                    join, imaging.join_fragments = imaging.join_fragments, lambda grey, dpi: grey
                    try:
                        before = cer(truth, ours(pixels, opts, dpi)[0])
                    finally:
                        imaging.join_fragments = join
                    unjoined.append((before, row[2]))
                extra += f" {'yes' if pieces else 'no'} | {before:.4f} |"
            if args.variants:
                prepared, factor = imaging.prepare_for_ocr(pixels, dpi)
                extra = f" {cer(truth, bare(png, args.lang, prepared, dpi=dpi * factor)[0]):.4f} |" + extra
            rows.append(row)
            print(f"| {fault} | {seed} | {row[2]:.4f} | {row[3]:.4f} | {passes} | {row[5]} {conf:.0f} | "
                  f"{o_s:.2f} | {b_s:.2f} |" + extra, flush=True)
    print("\n| fault | pages | mean CER digitize | max | mean CER bare | max | passes/page | s/page digitize/bare |")
    print("|---|---|---|---|---|---|---|---|")
    for fault in dict.fromkeys(r[0] for r in rows):
        rs = [r for r in rows if r[0] == fault]
        print(f"| {fault} | {len(rs)} | {np.mean([r[2] for r in rs]):.4f} | {max(r[2] for r in rs):.4f} | "
              f"{np.mean([r[3] for r in rs]):.4f} | {max(r[3] for r in rs):.4f} | "
              f"{np.mean([r[4] for r in rs]):.2f} | {sum(r[6] for r in rs) / sum(r[7] for r in rs):.2f} |")
    print(f"| all | {len(rows)} | {np.mean([r[2] for r in rows]):.4f} | {max(r[2] for r in rows):.4f} | "
          f"{np.mean([r[3] for r in rows]):.4f} | {max(r[3] for r in rows):.4f} | "
          f"{np.mean([r[4] for r in rows]):.2f} | {sum(r[6] for r in rows) / sum(r[7] for r in rows):.2f} |")
    if befores:
        print(f"\nletter measure before the line-pitch check: mean CER {np.mean(befores):.4f}, max {max(befores):.4f}; "
              f"after: mean {np.mean([r[2] for r in rows]):.4f}, max {max(r[2] for r in rows):.4f}")
    if unjoined:
        a, b = np.array(unjoined).T
        print(f"\npages in pieces: {len(a)}, CER unjoined -> joined: mean {a.mean():.4f} -> {b.mean():.4f}, "
              f"max {a.max():.4f} -> {b.max():.4f}, better {int(np.sum(b < a))}, worse {int(np.sum(b > a))}")
    print(f"\ncommand: PYTHONPATH=. {sys.executable} bench/degraded_bench.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
