"""Printing untrusted text (case records, titles, file names, OCR snippets) on a terminal, safely.

Imported data can carry terminal escapes (``\\x1b]0;…\\x07`` sets the window title, ``\\x1b[2J`` clears
the screen, OSC 52 writes the clipboard) or bidirectional overrides that make a line read differently
from what it says. :func:`printable` is the one function the CLI passes such text through.
"""

from __future__ import annotations

import unicodedata

REPLACEMENT = "\ufffd"  # shows that something was there, without acting on it
# Bidirectional embeddings, overrides and isolates ("Trojan Source"), and other invisible format characters
# that reorder or hide text; ZWJ/ZWNJ (U+200C/D) are kept: some scripts need them.
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}
# The one rule for joiners, in printable() and plain() alike: ZWNJ and ZWJ are kept (Persian, Indic scripts
# and emoji sequences change meaning or shape without them; they neither reorder nor hide other text).
JOINERS = "\u200c\u200d"


def _clean(char: str) -> str:
    if char in "\t\n\r\v\f":
        return " "
    if char in _BIDI or unicodedata.category(char) == "Cc":  # C0, DEL and C1 (\x9b is a one-byte CSI)
        return REPLACEMENT
    if "\udc80" <= char <= "\udcff":  # a file name's byte that is not UTF-8 (surrogateescape): as text.recorded
        return f"\\x{ord(char) - 0xDC00:02x}"
    if unicodedata.category(char) == "Cs":  # any other lone surrogate: not writable to a UTF-8 terminal
        return REPLACEMENT
    return char


def printable(text: object) -> str:
    """``text`` as one line with every control character (ESC, BEL, C1, bidi overrides) made inert."""
    text = "" if text is None else str(text)
    if text.isprintable():  # the common case: nothing to do
        return text
    return "".join(_clean(c) for c in text)


def plain(text: object) -> str:
    """``text`` as a stored or displayed value (a title, a file name, a sidecar field): NFC, line breaks and
    tabs made spaces, every other control, format (bidi overrides, zero-width spaces; not the JOINERS),
    private-use, unassigned or undecodable character removed, runs of spaces made one. Unlike :func:`printable` nothing is marked:
    the value is kept, not shown once."""
    text = unicodedata.normalize("NFC", "" if text is None else str(text))
    if text.isprintable() and "  " not in text and text == text.strip():
        return text
    kept = "".join(" " if c in "\t\n\r\v\f\x85\u2028\u2029" else c for c in text
                   if c in "\t\n\r\v\f\x85\u2028\u2029" or c in JOINERS or unicodedata.category(c)[0] != "C")
    return " ".join(kept.split())


def log_value(value: object) -> str:
    """``value`` for a ``key=value`` text log line: :func:`printable` (one line, no escapes), and quoted
    when it has spaces, ``=`` or quotes or is empty, so a file name cannot forge another field or line."""
    text = printable(value)
    if text and not any(c in text for c in ' ="\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
