"""Page images read for codes: a quick pass over every page, a thorough one only where it can pay off.

Pages are read one at a time from the converter's own source reader, so a 500-page register
never sits in memory. Every page gets the cheap look (enough for a separator's large QR code,
a few ms); the thorough look that finds a small receipt QR code on a noisy scan costs about half
a second a page, so it is spent only on a part's first pages and only when no earlier clue
(sidecar, manifest, folder, file name, separator) already named the case.

Pages are untrusted input: they are opened and decoded in a page worker (digitize.pageworkers:
forked, memory-capped, killed past a deadline), never in the long-lived watch or batch process,
so a decompression bomb or a decoder crash costs that worker, not the desk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .codes import read_codes
from .separators import Part, Separator, parse_separator, plan_parts

THOROUGH_PAGES = 2  # the receipt is the first or second page of a dossier


@dataclass
class PageScan:
    page_count: int
    separators: list[Separator | None] = field(default_factory=list)
    codes: dict[int, list[str]] = field(default_factory=dict)  # 0-based page -> code texts (quick pass)

    def parts(self) -> list[Part]:
        return plan_parts(self.separators)

    def part_codes(self, part: Part) -> list[str]:
        """Codes on the part's first pages, in page order (the receipt's QR code comes first)."""
        return [text for page in part.pages[:THOROUGH_PAGES] for text in self.codes.get(page, [])]


_opened: tuple[tuple, object] | None = None  # in a worker: (what was opened, the open Source)


def _source(path: str, opts):
    """The worker's open source for PATH, kept for the file's next pages."""
    global _opened
    from digitize.sources import open_source

    key = (path, opts.max_pixels, opts.default_dpi, opts.max_stream_mb, getattr(opts, "max_pages", None))
    if _opened is None or _opened[0] != key:
        if _opened is not None:
            _opened[1].close()
            _opened = None
        _opened = (key, open_source(Path(path), opts))
    return _opened[1]


def _count_task(path: str, opts) -> int:
    return _source(path, opts).page_count


def _codes_task(path: str, opts, index: int, quick: bool) -> list[str]:
    return read_codes(_source(path, opts).page(index).image, quick=quick)


def _in_worker(task, args: list[tuple], opts) -> list:
    from digitize.convert import in_page_worker

    return in_page_worker(task, args, opts)


def scan_pages(path: Path, opts) -> PageScan:
    """The quick pass over every page: separators, and any large code.

    A one-page file cannot be a stack, and its page gets the thorough look if its case is unknown,
    so it is not decoded here at all.
    """
    count = _in_worker(_count_task, [(str(path), opts)], opts)[0]
    scan = PageScan(count)
    if count == 1:
        scan.separators.append(None)
        return scan
    found = _in_worker(_codes_task, [(str(path), opts, index, True) for index in range(count)], opts)
    for index, codes in enumerate(found):
        scan.separators.append(parse_separator(codes))
        if codes:
            scan.codes[index] = codes
    return scan


def thorough_codes(path: Path, opts, part: Part) -> list[str]:
    """The thorough read of a part's first pages (downscaled and binarised variants too)."""
    found = _in_worker(_codes_task, [(str(path), opts, page, False) for page in part.pages[:THOROUGH_PAGES]], opts)
    return [text for codes in found for text in codes]
