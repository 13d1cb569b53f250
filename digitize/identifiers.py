"""Vietnamese administrative identifiers: case ID (mã hồ sơ), procedure code, archive FileCode.

Rules and the assumptions behind them:

* **Case ID** (Circular 01/2018/TT-VPCP, Art. 19): ``<agency code>-<YYMMDD>-<NNNN>``, e.g.
  ``000.00.31.H56-241015-0027``: receiving agency, date received, running number of that day.
* **Agency code** (Decision 20/2020/QĐ-TTg): the canonical form is 13 characters, four groups
  ``LLL.KK.JJ.Xnn`` from level 4 down to level 1 (unused levels are zeros; level 1 is a letter and two
  digits, e.g. ``H56`` a province, ``G01`` a ministry). Older local systems also issue shorter forms
  (``H56.32``, ``G22.32.01``), so any 2 to 5 dot-separated groups of 1 to 4 letters/digits are accepted;
  :attr:`AgencyCode.canonical` tells which is which.
* **Procedure code** (national procedure database): ``<level>.<6 digits>``, optionally followed by the
  publishing agency's code: ``2.001234`` or ``1.004616.000.00.00.H56``.
* **FileCode** (Decree 30/2020/NĐ-CP, Appendix VI): ``OrganId.FileCatalog.FileNotation`` where OrganId is the
  agency code (at most 13 characters), FileCatalog the catalogue number or the year the file was formed
  ("Mục lục số hoặc năm hình thành hồ sơ": 1 to 4 digits, written zero-padded to 4) and FileNotation the
  file number and symbol (at most 20 characters).

Invalid input raises :class:`~digitize.errors.BadArgsError` naming the part that is wrong, so users see
"date 241315 is not a real date (month 13)" instead of "invalid format".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from .errors import BadArgsError
from .text import nfc

_GROUP = re.compile(r"[A-Z0-9]{1,4}")
_CANONICAL_AGENCY = re.compile(r"\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}")
_DATE = re.compile(r"\d{6}")
_NUMBER = re.compile(r"\d{4}")
_PROCEDURE = re.compile(r"(\d)\.(\d{6})(?:\.(.+))?")
_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-"})

# In OCR text: an agency code, then two hyphen-separated numeric parts, with optional spaces around hyphens.
_CASE_ID_IN_TEXT = re.compile(
    r"(?<![A-Za-z0-9.])((?:[A-Za-z0-9]{1,4}\.){1,4}[A-Za-z0-9]{1,4})\s*-\s*(\d{6})\s*-\s*(\d{4})(?!\d)"
)

ORGAN_ID_MAX = 13
FILE_CATALOG_MAX = 4
FILE_NOTATION_MAX = 20


@dataclass(frozen=True)
class AgencyCode:
    code: str
    canonical: bool  # the 13-character Decision 20/2020 form

    def __str__(self) -> str:
        return self.code


class _Identifier:
    """Identifiers print as their canonical text form, ``value``."""

    value: str

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CaseId(_Identifier):
    agency: AgencyCode
    received: date
    number: int

    @property
    def value(self) -> str:
        return f"{self.agency}-{self.received:%y%m%d}-{self.number:04d}"


@dataclass(frozen=True)
class ProcedureCode(_Identifier):
    level: int
    number: str  # six digits, leading zeros kept
    agency: AgencyCode | None

    @property
    def value(self) -> str:
        base = f"{self.level}.{self.number}"
        return f"{base}.{self.agency}" if self.agency else base


@dataclass(frozen=True)
class FileCode(_Identifier):
    organ_id: str
    file_catalog: int
    file_notation: str

    @property
    def value(self) -> str:
        return f"{self.organ_id}.{self.file_catalog:04d}.{self.file_notation}"


def _clean(text: str) -> str:
    """Trim, NFC, unify the dash look-alikes OCR and word processors produce, upper-case."""
    return nfc(str(text)).translate(_DASHES).strip().upper()


def parse_agency_code(text: str) -> AgencyCode:
    code = _clean(text)
    groups = code.split(".")
    if not code:
        raise BadArgsError("agency code is empty")
    if not 2 <= len(groups) <= 5:
        raise BadArgsError(f"agency code {code!r} must have 2 to 5 dot-separated groups (e.g. 000.00.31.H56)")
    bad = [g for g in groups if not _GROUP.fullmatch(g)]
    if bad:
        raise BadArgsError(f"agency code {code!r}: group {bad[0]!r} must be 1 to 4 letters or digits")
    return AgencyCode(code, bool(_CANONICAL_AGENCY.fullmatch(code)))


def parse_yymmdd(text: str) -> date:
    """``241015`` -> 2024-10-15; a wrong month or day is named in the error."""
    if not _DATE.fullmatch(text):
        raise BadArgsError(f"date {text!r} must be 6 digits YYMMDD")
    year, month, day = 2000 + int(text[:2]), int(text[2:4]), int(text[4:])
    if not 1 <= month <= 12:
        raise BadArgsError(f"date {text} is not a real date (month {month:02d})")
    try:
        return date(year, month, day)
    except ValueError:
        raise BadArgsError(f"date {text} is not a real date (day {day:02d} of {month:02d}/{year})") from None


def parse_case_id(text: str) -> CaseId:
    """Validate a mã hồ sơ and return its parts; the error says which part is wrong."""
    value = _clean(text)
    if not value:
        raise BadArgsError("case ID is empty")
    parts = value.rsplit("-", 2)
    if len(parts) != 3:
        raise BadArgsError(f"case ID {value!r} must look like <agency code>-YYMMDD-NNNN, e.g. 000.00.31.H56-241015-0027")
    agency_text, date_text, number_text = (p.strip() for p in parts)
    try:
        agency = parse_agency_code(agency_text)
    except BadArgsError as e:
        raise BadArgsError(f"case ID {value!r}: {e}") from None
    try:
        received = parse_yymmdd(date_text)
    except BadArgsError as e:
        raise BadArgsError(f"case ID {value!r}: {e}") from None
    if not _NUMBER.fullmatch(number_text):
        raise BadArgsError(f"case ID {value!r}: running number {number_text!r} must be 4 digits")
    return CaseId(agency, received, int(number_text))


def normalize_case_id(text: str) -> str:
    return parse_case_id(text).value


def is_case_id(text: str) -> bool:
    try:
        parse_case_id(text)
    except BadArgsError:
        return False
    return True


def parse_procedure_code(text: str) -> ProcedureCode:
    value = _clean(text)
    m = _PROCEDURE.fullmatch(value)
    if not m:
        raise BadArgsError(f"procedure code {value!r} must look like 1.004616 or 1.004616.000.00.00.H56")
    agency = None
    if m.group(3):
        try:
            agency = parse_agency_code(m.group(3))
        except BadArgsError as e:
            raise BadArgsError(f"procedure code {value!r}: {e}") from None
    return ProcedureCode(int(m.group(1)), m.group(2), agency)


def find_case_ids(text: str) -> list[str]:
    """Every valid case ID in OCR text, normalised, in order of appearance, without repeats.

    Tolerates a ``Mã hồ sơ:`` label, spaces around the hyphens and dash look-alikes; candidates
    with an impossible date are dropped rather than guessed at.
    """
    found: list[str] = []
    for m in _CASE_ID_IN_TEXT.finditer(nfc(text).translate(_DASHES)):
        candidate = f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
        try:
            value = normalize_case_id(candidate)
        except BadArgsError:
            continue
        if value not in found:
            found.append(value)
    return found


def parse_file_code(organ_id: str, file_catalog: str | int, file_notation: str) -> FileCode:
    """Check the Decree 30/2020 length rules for the archive FileCode parts."""
    organ = _clean(organ_id)
    if not organ or len(organ) > ORGAN_ID_MAX:
        raise BadArgsError(f"OrganId {organ!r} must be 1 to {ORGAN_ID_MAX} characters")
    catalog = str(file_catalog).strip()
    if not (1 <= len(catalog) <= FILE_CATALOG_MAX and catalog.isdigit()):
        raise BadArgsError(f"FileCatalog {catalog!r} must be a catalogue number or year of 1 to "
                           f"{FILE_CATALOG_MAX} digits")
    notation = nfc(str(file_notation)).strip()
    if not notation or len(notation) > FILE_NOTATION_MAX:
        raise BadArgsError(f"FileNotation {notation!r} must be 1 to {FILE_NOTATION_MAX} characters")
    return FileCode(organ, int(catalog), notation)
