#!/usr/bin/env python3
"""Encode stage alone: time and size per page on samples/ and on generated noisy pages.

Short (a few seconds); its numbers depend on the machine and its load. For each page: the
archival pixels as convert.py would encode them (decoded, not turned), encoded with the page
budget; prints a markdown table (ms, KB, encoding, budget KB).

    PYTHONPATH=. .venv/bin/python bench/encode_bench.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digitize import encode, imaging  # noqa: E402
from digitize.convert import ConvertOptions  # noqa: E402
from digitize.sources import open_source  # noqa: E402
from tests.pages import render_text_page  # noqa: E402


def sample_pages():
    opts = ConvertOptions()
    for path in sorted((ROOT / "samples").iterdir()):
        if path.suffix.lower() not in (".png", ".jpg", ".tif", ".pdf"):
            continue
        with open_source(path, opts) as src:
            for page in src:
                if page.words is not None:
                    continue
                pixels = imaging.as_uint8(np.asarray(page.image))
                yield f"{path.name}#{page.index + 1}", pixels, page.dpi


def noisy_pages():
    """A4 at 300 dpi, grain of growing strength, grey and colour (scanner sensor noise)."""
    rng = np.random.default_rng(5)
    base = render_text_page(size=(2480, 3508), font_px=58, margin=240)
    for sigma in (6, 12, 20, 30):
        grey = np.clip(base.astype(np.float32) * 0.9 + 15 + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)
        yield f"noisy-grey-s{sigma}", grey, 300.0
    tint = np.stack([base, base, base], axis=-1).astype(np.float32) * np.array([0.97, 0.93, 0.82])
    for sigma in (8, 20):
        colour = np.clip(tint + rng.normal(0, sigma, tint.shape), 0, 255).astype(np.uint8)
        yield f"noisy-colour-s{sigma}", colour, 300.0


def stepped_encode(pixels: np.ndarray, quality: int, budget: int) -> encode.EncodedImage:
    """The encoder before the predicted pass (for --before): full trial encodes stepping quality
    down by 10 to q40, then JPEG 2000 at the budget."""
    import io

    from PIL import Image

    img = Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
    while True:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, subsampling="4:2:0")
        if buf.tell() <= budget or quality <= 40:
            break
        quality = max(40, quality - 10)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=True, subsampling="4:2:0")
    if buf.tell() > budget:
        return encode.encode_jpx(pixels, budget)
    return encode.EncodedImage(buf.getvalue(), img.width, img.height, "", 8, "/DCTDecode", encoding=f"jpeg-q{quality}")


def timed(fn, repeat: int):
    best, out = None, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ms = (time.perf_counter() - t) * 1000
        best = ms if best is None else min(best, ms)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    opts = ConvertOptions()
    print("| page | mode | budget KB | before | KB | ms | now | KB | ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    totals = [0.0, 0.0]
    for name, pixels, dpi in [*sample_pages(), *noisy_pages()]:
        mode = imaging.colour_mode(pixels)
        h, w = pixels.shape[:2]
        budget = encode.page_budget(w, h, dpi, opts.page_kb)
        if mode == "bilevel":
            continue  # CCITT G4, unchanged
        old, old_ms = timed(lambda: stepped_encode(pixels, opts.jpeg_quality, budget), args.repeat)
        new, new_ms = timed(lambda: encode.encode_archival(pixels, mode, opts.jpeg_quality, budget), args.repeat)
        totals[0] += old_ms
        totals[1] += new_ms
        print(f"| {name} | {mode} | {budget // 1024} | {old.encoding} | {len(old.data) // 1024} | {old_ms:.0f} "
              f"| {new.encoding} | {len(new.data) // 1024} | {new_ms:.0f} |")
    print(f"\ntotal encode ms: before {totals[0]:.0f}, now {totals[1]:.0f}")


if __name__ == "__main__":
    main()
