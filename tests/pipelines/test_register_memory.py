"""The pipeline's own pass over a long register reads one page at a time: memory does not grow with pages."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pipeline_support import ROOT

pytestmark = pytest.mark.integration

MEASURE = """
import resource, sys
from pathlib import Path
from digitize.config import Settings
from digitize.convert import ConvertOptions
from pipelines.pagescan import scan_pages
from pipelines.separators import Part
from pipelines.pagescan import thorough_codes
opts = ConvertOptions.from_settings(Settings().convert)
scan = scan_pages(Path(sys.argv[1]), opts)
thorough_codes(Path(sys.argv[1]), opts, Part(tuple(range(scan.page_count))))
# pages are decoded in a page worker (a child): the larger of this process and its children
print(scan.page_count, max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
"""


def _peak_kib(pdf) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(pdf)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    pages, kib = done.stdout.split()
    return int(pages), int(kib)


def test_separator_and_code_scan_of_a_60_page_register_needs_no_more_memory_than_3_pages(tmp_path):
    for pages in (3, 60):
        subprocess.run([sys.executable, str(ROOT / "samples" / "generate.py"), "--pages", str(pages),
                        "--out", str(tmp_path / f"p{pages}.pdf")], check=True, capture_output=True, cwd=ROOT)
    small_pages, small = _peak_kib(tmp_path / "p3.pdf")
    big_pages, big = _peak_kib(tmp_path / "p60.pdf")
    assert (small_pages, big_pages) == (3, 60)
    assert big < small * 1.25, f"peak RSS {small} KiB for 3 pages, {big} KiB for 60"
