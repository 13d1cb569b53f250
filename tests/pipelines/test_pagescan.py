"""The pipeline's pass over pages for codes decodes untrusted pages in a page worker, never in the
long-lived watch or batch process (issue 9, finding 5)."""

from __future__ import annotations

import os
import zlib

import pikepdf
import pytest
from scans import page, write_pdf

from digitize.convert import ConvertOptions
from digitize.errors import InputTooLargeError
from pipelines import pagescan
from pipelines.separators import Part

pytestmark = pytest.mark.integration


def test_pages_are_decoded_in_a_worker_process_not_in_the_caller(tmp_path, monkeypatch):
    src = write_pdf([page(["Trang một"]), page(["Trang hai"])], tmp_path / "two.pdf")
    monkeypatch.setattr(pagescan, "read_codes", lambda image, quick=False: [f"pid:{os.getpid()}"])
    scan = pagescan.scan_pages(src, ConvertOptions(jobs=1))
    thorough = pagescan.thorough_codes(src, ConvertOptions(jobs=1), Part((0,)))
    readers = {text for codes in scan.codes.values() for text in codes} | set(thorough)
    assert readers and f"pid:{os.getpid()}" not in readers


def test_a_bomb_page_in_a_stack_is_refused_and_the_caller_is_unharmed(tmp_path):
    src = write_pdf([page(["Trang một"]), page(["Trang hai"])], tmp_path / "stack.pdf")
    with pikepdf.open(src, allow_overwriting_input=True) as pdf:
        body = zlib.compressobj(9)
        data = b"".join(body.compress(b"q Q " * (1 << 20)) for _ in range(60)) + body.flush()  # 250 MB of q Q
        pdf.pages[1].Contents = pikepdf.Stream(pdf, data, Filter=pikepdf.Name.FlateDecode)
        pdf.save(src)
    with pytest.raises(InputTooLargeError, match="decompression bomb"):
        pagescan.scan_pages(src, ConvertOptions(jobs=1))
    assert pagescan._opened is None  # nothing of the file was opened here
