"""Character error rate (CER) of OCR text against ground truth.

Used by the tests and the benchmark to compare engines on the samples. Layout is not what is
measured: line breaks and runs of spaces differ between engines for the same reading, so all
whitespace is collapsed before comparing; Unicode is NFC so that a precomposed "ế" and "e" plus
combining marks count as the same character.
"""

from __future__ import annotations

import numpy as np

from .text import nfc, squash_whitespace

FORM_FEED = "\f"


def normalise_for_cer(text: str) -> str:
    """NFC, every run of whitespace (newlines, tabs, form feeds) as one space, trimmed."""
    return squash_whitespace(nfc(text))


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute, each cost 1), one numpy row at a time.

    Memory is O(len(b)); a 3000 x 3000 comparison takes a few tens of milliseconds because the
    row's insertion chain is resolved with a running minimum instead of a Python loop.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    b_codes = _codes(b)
    index = np.arange(len(b) + 1)
    row = index.copy()
    for i, char in enumerate(_codes(a), start=1):
        substitute = row[:-1] + (b_codes != char)
        delete = row[1:] + 1
        candidate = np.empty_like(row)
        candidate[0] = i
        candidate[1:] = np.minimum(substitute, delete)
        # insertion: new[j] = min_k<=j (candidate[k] + j - k), a running minimum of candidate - index
        row = np.minimum.accumulate(candidate - index) + index
    return int(row[-1])


def cer(reference: str, hypothesis: str) -> float:
    """Edits needed to turn the hypothesis into the reference, per reference character.

    0.0 is perfect; it can exceed 1.0 when the hypothesis is much longer (OCR of noise).
    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    ref, hyp = normalise_for_cer(reference), normalise_for_cer(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return levenshtein(ref, hyp) / len(ref)


def page_cers(reference: str, hypothesis: str) -> list[float]:
    """CER per page of form-feed separated texts (sidecar / pdftotext format).

    One value per reference page; a page missing from the hypothesis scores as empty text.
    A trailing form feed (pdftotext ends every page with one) does not make an extra page.
    """
    ref_pages = _pages(reference)
    hyp_pages = _pages(hypothesis)
    hyp_pages += [""] * (len(ref_pages) - len(hyp_pages))
    return [cer(r, h) for r, h in zip(ref_pages, hyp_pages)]


def _pages(text: str) -> list[str]:
    pages = text.split(FORM_FEED)
    if len(pages) > 1 and not pages[-1].strip():
        pages.pop()
    return pages
