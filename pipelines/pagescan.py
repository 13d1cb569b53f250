"""Page images read for codes: a quick pass over every page, a thorough one only where it can pay off.

Pages are read one at a time from the converter's own source reader, so a 500-page register
never sits in memory. Every page gets the cheap look (enough for a separator's large QR code,
a few ms); the thorough look that finds a small receipt QR code on a noisy scan costs about half
a second a page, so it is spent only on a part's first pages and only when no earlier clue
(sidecar, manifest, folder, file name, separator) already named the case.
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


def scan_pages(path: Path, opts) -> PageScan:
    """The quick pass over every page: separators, and any large code.

    A one-page file cannot be a stack, and its page gets the thorough look if its case is unknown,
    so it is not decoded here at all.
    """
    from digitize.sources import open_source

    with open_source(path, opts) as src:
        scan = PageScan(src.page_count)
        if src.page_count == 1:
            scan.separators.append(None)
            return scan
        for index in range(src.page_count):
            codes = read_codes(src.page(index).image, quick=True)
            scan.separators.append(parse_separator(codes))
            if codes:
                scan.codes[index] = codes
    return scan


def thorough_codes(path: Path, opts, part: Part) -> list[str]:
    """The thorough read of a part's first pages (downscaled and binarised variants too)."""
    from digitize.sources import open_source

    with open_source(path, opts) as src:
        return [text for page in part.pages[:THOROUGH_PAGES] for text in read_codes(src.page(page).image)]
