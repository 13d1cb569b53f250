"""One pass over a file's page images to find separator sheets and the codes on each part's first pages.

Pages are read one at a time from the converter's own source reader, so a 500-page register
never sits in memory. Every page gets the cheap look (enough for a separator's large QR code);
the first pages of each part also get the thorough look that finds a small receipt QR code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .codes import read_codes
from .separators import Part, Separator, parse_separator, plan_parts

THOROUGH_PAGES = 2  # receipt is the first or second page of a dossier


@dataclass
class PageScan:
    page_count: int
    separators: list[Separator | None] = field(default_factory=list)
    codes: dict[int, list[str]] = field(default_factory=dict)  # 0-based page -> code texts

    def parts(self) -> list[Part]:
        return plan_parts(self.separators)

    def part_codes(self, part: Part) -> list[str]:
        """Codes on the part's first pages, in page order (the receipt's QR code comes first)."""
        return [text for page in part.pages[:THOROUGH_PAGES] for text in self.codes.get(page, [])]


def scan_pages(path: Path, opts) -> PageScan:
    from digitize.sources import open_source

    with open_source(path, opts) as src:
        scan = PageScan(src.page_count)
        since_part_start = 0
        for index in range(src.page_count):
            image = src.page(index).image
            codes = read_codes(image, quick=True)
            separator = parse_separator(codes)
            if separator is None and not codes and since_part_start < THOROUGH_PAGES:
                codes = read_codes(image, quick=False)
                separator = parse_separator(codes)
            del image
            scan.separators.append(separator)
            if codes:
                scan.codes[index] = codes
            since_part_start = 0 if separator else since_part_start + 1
    return scan
