"""Search text processing, identical for SQLite and PostgreSQL: tokens, folded tokens, snippets.

Tokenising and folding happen here in Python rather than in each database, so ``đ`` folds to ``d``
(which neither Unicode decomposition nor PostgreSQL's unaccent does) and both backends match the
same words. Each entry keeps two token columns: *exact* (case-folded, accents kept) and *folded*
(accents and đ removed). A query matches on folded tokens; hits that also match on exact tokens rank first
(a query typed without accents has no exact pass: it says nothing about accents).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from digitize.errors import BadArgsError
from digitize.text import nfc, search_key, squash_whitespace

_WORD = re.compile(r"\w+")
SNIPPET_CHARS = 160
MARK = ("[", "]")
FOLD_HEAD = 256  # characters of a text folded first for its snippet (then 4x as many, until the window fits)
_SPACE = re.compile(r"\s")


@dataclass(frozen=True)
class Query:
    exact: tuple[str, ...]
    folded: tuple[str, ...]


def exact_tokens(text: str) -> list[str]:
    return _WORD.findall(nfc(text).casefold())


def folded_tokens(text: str) -> list[str]:
    return _WORD.findall(search_key(text))


def parse_query(text: str) -> Query:
    exact = tuple(dict.fromkeys(exact_tokens(text)))
    if not exact:
        raise BadArgsError(f"search query {text!r} has no words to look for")
    return Query(exact, tuple(dict.fromkeys(search_key(t) for t in exact)))


def fts5_match(tokens: tuple[str, ...], column: str) -> str:
    """An FTS5 expression requiring every token in ``column``; tokens are quoted so none is an operator."""
    quoted = " ".join('"' + t.replace('"', '""') + '"' for t in tokens)
    return f"{column} : ({quoted})"


def agency_token(code: str) -> str:
    """The one word an agency code is indexed under in the SQLite ``agencies`` column (migration 0005's
    search_scope view builds the same in SQL): ``g`` and the code's UTF-8 bytes in hex, since the tokenizer
    would split a code at its dots."""
    return "g" + code.encode("utf-8").hex()


def fts5_scope(agencies: tuple[str, ...]) -> str:
    """An FTS5 expression matching entries that a reader of one of ``agencies`` may see (not empty)."""
    return "agencies : (" + " OR ".join(agency_token(a) for a in agencies) + ")"


@lru_cache(maxsize=256)
def _match_pattern(folded: tuple[str, ...]) -> tuple[re.Pattern, bool]:
    """The query's folded words as one regex, longest first (built once per query, not once per hit), and
    whether every word is a run of word characters: then each match is a whole word of the text, so the
    matches found from any position on are those a scan of the whole text finds there."""
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in sorted(folded, key=len, reverse=True)) + r")\b")
    return pattern, all(_WORD.fullmatch(t) for t in folded)


@lru_cache(maxsize=1)
def _outside_latin_fold() -> re.Pattern:
    """A character outside the set :func:`fold_latin` folds exactly: below U+3000, those whose
    decomposition (after đ/Đ -> d/D) is one ASCII character followed only by combining marks, and whose
    search_key is that character in lower case (Vietnamese letters, ASCII, most of Latin); built once."""
    inside = []
    for code in range(0x3000):
        char = chr(code)
        if 0xD800 <= code < 0xE000:
            continue
        parts = unicodedata.normalize("NFD", char.translate(_D_STROKE))
        if (parts[0].isascii() and all(not c.isascii() and unicodedata.combining(c) for c in parts[1:])
                and parts[0].lower() == search_key(char)):
            inside.append(code)
    ranges, start = [], inside[0]
    for prev, code in zip(inside, inside[1:] + [-1]):
        if code != prev + 1:
            ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev > start else ""))
            start = code
    return re.compile("[^" + "".join(ranges) + "]")


_D_STROKE = str.maketrans({"đ": "d", "Đ": "D"})


def fold_latin(text: str) -> str:
    """:func:`digitize.text.search_key` of ``text``, through C string operations alone when every character
    is one it folds to a single ASCII letter or is ASCII (Vietnamese text: ~40 % less CPU than the per-character
    table): decomposed, the marks (all non-ASCII) dropped by the ASCII codec, lower-cased; each character
    folds alone, so this equals search_key character for character. Any other text: search_key."""
    if _outside_latin_fold().search(text):
        return search_key(text)
    text = text.replace("đ", "d").replace("Đ", "D")  # str.replace, not translate: no Python lookup per character
    return unicodedata.normalize("NFD", text).encode("ascii", "ignore").decode("ascii").lower()


def _spans(pattern: re.Pattern, whole_words: bool, folded: str, width: int) -> tuple[int, list[tuple[int, int]]] | None:
    """The snippet's start and the matches inside it (None: no match at all); only the window is scanned
    when matches are whole words."""
    if not whole_words:
        spans = [m.span() for m in pattern.finditer(folded)]
        if not spans:
            return None
        start = max(0, spans[0][0] - width // 3)
        return start, [(a, b) for a, b in spans if a >= start and b <= start + width]
    first = pattern.search(folded)
    if first is None:
        return None
    start, spans = max(0, first.start() - width // 3), []
    for m in pattern.finditer(folded, start):
        if m.end() > start + width:
            break
        spans.append(m.span())
    return start, spans


def highlight(text: str, query: Query, width: int = SNIPPET_CHARS) -> str:
    """A window of ``text`` around the first match, matched words wrapped in ``[...]``, accents kept.

    Matching runs on the folded text; Vietnamese NFC text folds character for character, so the
    positions found there mark the original. If folding changed the length before the window's end, the
    folded text is shown. Only a head of the text is normalised and folded (cut before a whitespace, it
    normalises exactly as it does inside the whole), grown until it holds the window: a search builds
    twenty snippets from pages of thousands of characters, and the first match is usually early.
    """
    pattern, whole_words = _match_pattern(query.folded)
    cut = FOLD_HEAD if whole_words else len(text)
    done, head, folded = 0, "", ""
    while True:
        space = _SPACE.search(text, cut) if cut < len(text) else None
        cut = space.start() if space else len(text)
        more = cut < len(text) and not text[cut:].isspace()
        # grown by the next piece only (it starts at a whitespace: no word, composition or fold spans the
        # joint), so no character is normalised and folded twice
        piece = squash_whitespace(nfc(text[done:cut]))
        if piece:
            head, folded = (head + " " + piece, folded + " " + fold_latin(piece)) if head else (piece, fold_latin(piece))
        done = cut
        found = _spans(pattern, whole_words, folded, width)
        if not more or (found is not None and found[0] + width <= len(folded)):
            return _window(head if len(folded) == len(head) else folded, found, width, more)
        cut *= 4


def _window(shown: str, found: tuple[int, list[tuple[int, int]]] | None, width: int, more: bool) -> str:
    """The snippet of ``shown`` (``more``: the text goes on after it) with the spans marked."""
    if found is None:
        return shown[:width] + ("…" if len(shown) > width or more else "")
    start, spans = found
    end = min(len(shown), start + width)
    out, pos = [], start
    for a, b in spans:
        if b > end:
            continue
        out += [shown[pos:a], MARK[0], shown[a:b], MARK[1]]
        pos = b
    out.append(shown[pos:end])
    return ("…" if start else "") + "".join(out) + ("…" if end < len(shown) or more else "")
