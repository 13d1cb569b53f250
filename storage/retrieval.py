"""Getting an e-dossier back out: every document in dossier order, each SHA-256 checked, plus a manifest.

Output file names come from the sequence and an ASCII slug of the title (never the raw title), so a
title cannot steer where a file lands. Each retrieval is recorded as an event, failed ones too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zipfile
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager

from digitize.errors import DigitizeError, FileAccessError, NotFoundError
from digitize.fsutil import atomic_open
from digitize.text import search_key

from .index import Index, now_iso
from .keys import original_extension
from .models import CaseRecord, DocumentRow, Event
from .modes import file_mode, open_private_folder
from .objects import Mismatch, ObjectStore

SLUG_CHARS = 40
MANIFEST = "manifest.json"


@dataclass
class RetrievedFile:
    doc_id: int
    sequence: int
    title: str
    path: Path
    sha256: str
    key: str


@dataclass
class Retrieval:
    case_id: str
    out_dir: Path
    files: list[RetrievedFile]
    manifest: Path


def slug(text: str) -> str:
    """``Đơn đề nghị (bản chính)`` -> ``don-de-nghi-ban-chinh``: ASCII letters, digits and hyphens only."""
    words = re.findall(r"[a-z0-9]+", search_key(text))
    return "-".join(words)[:SLUG_CHARS].strip("-") or "document"


def output_name(doc: DocumentRow, original: bool) -> str:
    extension = original_extension(doc.source_name) if original else "pdf"
    return f"{doc.sequence:04d}-{slug(doc.title or doc.doc_type)}{'-original' if original else ''}.{extension}"


def _wanted(doc: DocumentRow, original: bool) -> tuple[str, str]:
    return (doc.original_key, doc.original_sha256) if original else (doc.pdfa_key, doc.pdfa_sha256)


def _dossier(index: Index, case: CaseRecord) -> list[DocumentRow]:
    docs = index.documents(case.case_id)
    if not docs:
        raise NotFoundError(f"case {case.case_id} has no stored documents")
    return docs


class Folder:
    """Where ``digitize get -o`` (and any copy kept as files) writes: the copies are as private as the archive
    (review rev17cli M2): a new folder is made 0700 (0750 with ``group_readable``; an existing one keeps its
    mode, with a warning if open to others), the files 0600 (0640), whatever the umask of the shell. The
    folder is opened once, O_NOFOLLOW, and must be this account's (review r2cli N4: a symlink planted in a
    parent others can write is refused, never written through); every step is relative to that descriptor.
    Each file takes its name only once its SHA-256 matched (atomic_open), so an earlier good copy stays if
    the object is corrupt; a stale manifest.json goes first, so the folder never holds one naming files of
    another run. ``close()`` when done."""

    def __init__(self, out_dir: Path, group_readable: bool = False):
        self.out_dir, self.mode = out_dir, file_mode(group_readable)
        try:
            self.fd = open_private_folder(out_dir, group_readable)
        except OSError as e:
            raise FileAccessError(f"cannot write {e.filename or out_dir}: {e.strerror}") from None
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(MANIFEST, dir_fd=self.fd)
        except OSError as e:
            self.close()
            raise FileAccessError(f"cannot write {out_dir / MANIFEST}: {e.strerror}") from None

    def where(self, name: str) -> Path:
        return self.out_dir / name

    def member(self, name: str) -> ContextManager[BinaryIO]:
        return atomic_open(self.where(name), self.mode, dir_fd=self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Zip:
    """Members of a ZIP being built (the portal's dossier ZIP): each object is copied straight from the store
    into its member, hashed on the way, so the dossier is written once (review rev17cli L4); a mismatch
    fails the whole ZIP, which is then never sent."""

    def __init__(self, zf: zipfile.ZipFile):
        self.zf, self.out_dir = zf, Path(".")

    def where(self, name: str) -> Path:
        return Path(name)

    def member(self, name: str) -> ContextManager[BinaryIO]:
        return self.zf.open(name, "w", force_zip64=True)  # an original may be over 2 GB

    def close(self) -> None:
        pass  # the ZIP is its caller's


def retrieve(objects: ObjectStore, index: Index, case: CaseRecord, into: Folder | Zip, original: bool,
             actor: str, tool: str, client: str | None = None,
             add_events: Callable[[list[Event]], None] | None = None) -> Retrieval:
    """Every document of the case into ``into``, SHA-256 checked, then manifest.json; one event per document,
    a failed one too. ``add_events``: where those events go (default: the index at once; the portal's gate
    queues them with its request's, so a ZIP answered 503 withdraws them too)."""
    docs = _dossier(index, case)
    files: list[RetrievedFile] = []
    events: list[Event] = []
    try:
        for doc in docs:
            key, expected = _wanted(doc, original)
            target = into.where(output_name(doc, original))
            actual, failure = None, None
            try:
                with into.member(target.name) as out:
                    actual = objects.copy_to(key, out, expected)
            except Mismatch as e:
                actual, failure = e.actual, e
            except DigitizeError as e:
                failure = e
            except OSError as e:
                failure = FileAccessError(f"cannot write {target}: {e.strerror}")
            events.append(Event("retrieved", "failure" if failure else "success", actor, tool, doc_id=doc.doc_id,
                                case_id=doc.case_id, checksum=actual, client=client,
                                detail=f"{'original' if original else 'pdfa'} of document {doc.sequence} -> {target}"
                                       + (f" (not written: {failure})" if failure else "")))
            if failure:
                raise failure
            files.append(RetrievedFile(int(doc.doc_id), doc.sequence, doc.title, target, actual, key))
    finally:
        (add_events or index.add_events)(events)
    manifest = into.where(MANIFEST)
    try:
        with into.member(MANIFEST) as out:
            out.write(json.dumps({
                "case": asdict(case),
                "kind": "original" if original else "pdfa",
                "retrieved_at": now_iso(),
                "documents": [{"sequence": f.sequence, "doc_id": f.doc_id, "title": f.title, "file": f.path.name,
                               "sha256": f.sha256} for f in files],  # no object key: it names the home case
            }, ensure_ascii=False, indent=2).encode("utf-8"))
    except OSError as e:
        raise FileAccessError(f"cannot write {manifest}: {e.strerror}") from None
    return Retrieval(case.case_id, into.out_dir, files, manifest)


def presigned_urls(objects: ObjectStore, index: Index, case: CaseRecord, expires: timedelta, original: bool,
                   actor: str, tool: str) -> list[tuple[DocumentRow, str]]:
    """Bearer links straight to the bucket. Issuing one is recorded, as what it is (review rev17cli L5): not a
    retrieval (no checksum: nothing was read or checked), and its uses never reach this log (the bucket's
    own access log is their only record)."""
    kind = "original" if original else "pdfa"
    urls = [(doc, objects.presigned_url(_wanted(doc, original)[0], expires)) for doc in _dossier(index, case)]
    index.add_events([Event("retrieved", "success", actor, tool, doc_id=doc.doc_id, case_id=doc.case_id,
                            detail=f"issued a presigned URL to {kind} of document {doc.sequence}, valid {expires} "
                                   "(its uses are not recorded here)")
                      for doc, _ in urls])
    return urls
