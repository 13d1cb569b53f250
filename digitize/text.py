"""Vietnamese text normalisation shared by OCR output, search and accuracy measurement."""

from __future__ import annotations

import unicodedata

# Unicode decomposition leaves đ/Đ (U+0111/U+0110) intact: they are letters, not d + a mark.
_EXTRA_FOLD = str.maketrans({"đ": "d", "Đ": "D"})


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


CACHED_BELOW = 0x3000  # Latin, Vietnamese, Greek, Cyrillic, punctuation: the fold table stays small


class _FoldTable(dict):
    """Character -> that character decomposed (NFD) without its combining marks, filled as characters are met.

    Decomposition, and dropping the marks, work character by character (canonical reordering only moves
    marks among marks, which are all dropped), so translating through this table and composing (NFC) the
    result gives exactly what decomposing the whole text would, without a Python step per character:
    search folds every snippet's text and every indexed page."""

    def __missing__(self, code: int) -> str:
        decomposed = unicodedata.normalize("NFD", chr(code).translate(_EXTRA_FOLD))
        folded = "".join(c for c in decomposed if not unicodedata.combining(c))
        if code < CACHED_BELOW:  # a query may hold any code point: only the scripts met in dossiers are kept
            self[code] = folded
        return folded


_FOLD = _FoldTable()


def fold_accents(text: str) -> str:
    """``Quyền sử dụng đất`` -> ``Quyen su dung dat``: strip marks, and fold đ/Đ too."""
    return unicodedata.normalize("NFC", text.translate(_FOLD))


def search_key(text: str) -> str:
    """Case- and accent-insensitive form used by the index for matching."""
    return fold_accents(text).casefold()


def squash_whitespace(text: str) -> str:
    # str.split() and the regex \s+ agree on what whitespace is (str.isspace, checked on every code point);
    # split/join is several times faster, and search runs this on every snippet's page
    return " ".join(text.split())


def recorded(text: str) -> str:
    """``text`` as a report, an index row or a log may keep it: a file name that is not UTF-8 (a
    legacy zip's cp1258 or latin-1 bytes, which Python carries as lone surrogates) gets its odd
    bytes written ``\\xe9``, where encoding it as UTF-8 failed ("surrogates not allowed"). Valid
    text is returned as it is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")  # a name from the file system: its own bytes
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate from elsewhere (JSON's \ud800)
    return raw.decode("utf-8", "backslashreplace")


def recorded_values(value):
    """``value`` (what is about to be dumped as JSON: dicts, lists, strings) with every string
    :func:`recorded`. JSON must get valid text before it is dumped: the text writers' own fallback
    (fsutil) would put a ``\\xe9`` inside a JSON string, which is not a valid JSON escape."""
    if isinstance(value, str):
        return recorded(value)
    if isinstance(value, dict):
        return {recorded_values(k): recorded_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [recorded_values(v) for v in value]
    return value


def export_encoding(head: bytes) -> str:
    """The text encoding of a CSV export from its first bytes: UTF-16 when it starts with its BOM
    (Excel's "Unicode Text"), else UTF-8 with or without Excel's BOM. A legacy code page (cp1258,
    TCVN3) is not guessed: it cannot be told apart reliably, and a wrong guess would put wrong
    letters into case records."""
    return "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
