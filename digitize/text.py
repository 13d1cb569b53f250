"""Vietnamese text normalisation shared by OCR output, search and accuracy measurement."""

from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")
# Unicode decomposition leaves đ/Đ (U+0111/U+0110) intact: they are letters, not d + a mark.
_EXTRA_FOLD = str.maketrans({"đ": "d", "Đ": "D"})


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def fold_accents(text: str) -> str:
    """``Quyền sử dụng đất`` -> ``Quyen su dung dat``: strip marks, and fold đ/Đ too."""
    decomposed = unicodedata.normalize("NFD", text.translate(_EXTRA_FOLD))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped)


def search_key(text: str) -> str:
    """Case- and accent-insensitive form used by the index for matching."""
    return fold_accents(text).casefold()


def squash_whitespace(text: str) -> str:
    return _WS.sub(" ", text).strip()
