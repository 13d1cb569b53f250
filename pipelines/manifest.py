"""Batch manifests: a CSV mapping source files to case, procedure and archive metadata.

Columns: ``path`` (relative to SRC, or to the manifest's folder), ``case_id``, ``procedure_code``,
``title``, ``organ_id``, ``file_catalog``, ``file_notation``, ``maintenance``, ``rights``; also any
other DocumentMeta field (``sequence``, ``doc_type``, ``procedure_name``, ``agency``...).
Every bad row is reported at once, with its line number, so one ``--dry-run`` fixes a whole file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from digitize.errors import InputError
from digitize.terminal import printable
from digitize.text import export_encoding

from .metadata import ARCHIVE_FIELDS, META_FIELDS, Clue, clue_from_mapping

COLUMNS = ("path", "case_id", "procedure_code", "title", "organ_id", "file_catalog", "file_notation",
           "maintenance", "rights")
KNOWN_COLUMNS = {"path", *META_FIELDS, *ARCHIVE_FIELDS}
MANIFEST_MAX_BYTES = 64_000_000  # ~300 000 rows of long titles; read whole, so bounded (review rev16batch L2)


@dataclass(frozen=True)
class ManifestProblem:
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" ({self.path})" if self.path else "")
        return f"{where}: {self.message}"


@dataclass
class Manifest:
    source: Path
    rows: dict[Path, Clue] = field(default_factory=dict)  # resolved source path -> clue
    problems: list[ManifestProblem] = field(default_factory=list)

    def hint(self, path: Path) -> Clue | None:
        return self.rows.get(path.resolve())


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    """Comma by default; Excel in a Vietnamese locale saves semicolons."""
    try:
        return csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _locate(raw: str, src: Path, manifest_dir: Path) -> Path | None:
    candidate = Path(raw)
    options = [candidate] if candidate.is_absolute() else [src / candidate, manifest_dir / candidate]
    return next((p.resolve() for p in options if p.is_file()), None)


def read_manifest(file: Path, src: Path) -> Manifest:
    """Parse and validate the whole manifest; problems are collected, not raised."""
    try:
        with open(file, "rb") as f:
            data = f.read(MANIFEST_MAX_BYTES + 1)
        if len(data) > MANIFEST_MAX_BYTES:
            raise InputError(f"manifest {printable(file)} is larger than {MANIFEST_MAX_BYTES // 1_000_000} MB: "
                             "split it into several batches")
        text = data.decode(export_encoding(data))
    except FileNotFoundError:
        raise InputError(f"manifest {printable(file)} not found") from None
    except UnicodeDecodeError:
        raise InputError(f"manifest {printable(file)} is not UTF-8 text (save it as 'CSV UTF-8' or 'Unicode Text')") from None
    except OSError as e:
        raise InputError(f"cannot read manifest {printable(file)}: {e.strerror}") from None
    manifest = Manifest(file)
    reader = csv.DictReader(text.splitlines(), dialect=_dialect(text))
    header = [(name or "").strip().lower() for name in reader.fieldnames or []]
    if "path" not in header:
        manifest.problems.append(ManifestProblem(1, "", "no 'path' column; expected columns: " + ", ".join(COLUMNS)))
        return manifest
    unknown = [name for name in header if name not in KNOWN_COLUMNS]
    if unknown:
        manifest.problems.append(ManifestProblem(1, "", "unknown columns: " + ", ".join(unknown)))
    src_resolved = src.resolve()
    for row in _rows(reader, manifest):
        line = reader.line_num
        data = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
        raw_path = data.get("path", "")
        problems = _row_problems(manifest, data, raw_path, src_resolved, file.parent)
        manifest.problems.extend(ManifestProblem(line, raw_path, p) for p in problems)
    return manifest


def _rows(reader: csv.DictReader, manifest: Manifest) -> Iterator[dict]:
    """The reader's rows; a row the csv module refuses (a field over its 128 KiB limit, review rev16batch
    L2) is a problem with its line number, and reading goes on with the next line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            # line_num still counts the rows before it: the refused row starts on the next line
            manifest.problems.append(ManifestProblem(reader.line_num + 1, "", f"unreadable row: {e}"))
            continue
        yield row


def _row_problems(manifest: Manifest, data: dict[str, str], raw_path: str, src: Path, here: Path) -> list[str]:
    if not raw_path:
        return ["empty path"]
    problems: list[str] = []
    located = _locate(raw_path, src, here)
    if located is None:
        problems.append("file not found under SRC or beside the manifest")
    elif not located.is_relative_to(src):
        problems.append(f"file is outside {src}")
    elif located in manifest.rows:
        problems.append("listed twice")
    clue, field_problems = clue_from_mapping("manifest", {k: v for k, v in data.items() if k in KNOWN_COLUMNS})
    problems.extend(field_problems)
    if located is not None and not problems:
        manifest.rows[located] = clue
    return problems
