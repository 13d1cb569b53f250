"""Fixity audit: re-read every object, compare its SHA-256 with the index, find orphans, finish crashes.

Problems are reported, never silently fixed, except pending rows older than ``stale_after`` (a store
that was killed): if all three objects are intact the store is completed from the sidecar, otherwise the
partial objects and the row are removed so the source (still in the inbox) can be stored again.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from digitize.errors import StorageError
from digitize.fsutil import work_dir

from .claims import ClaimBusy, claim
from .index import Index
from .keys import STAGING, case_prefix, is_link_key
from .models import DocumentRow, Event, SignatureRow
from .objects import ObjectStore
from .sidecar import read_link, sidecar_pages, sidecar_signatures

log = logging.getLogger("digitize.storage")

STALE_PENDING = timedelta(minutes=10)
EVENT_BATCH = 500  # fixity-checked events per write


@dataclass(frozen=True)
class Problem:
    kind: str  # "missing", "corrupt", "unreadable", "orphan", "signature", "link"; repairs: "completed", "cleared", "partial"
    key: str
    doc_id: int | None = None
    detail: str = ""


@dataclass
class VerifyReport:
    scope: str
    documents: int = 0
    objects: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_document(objects: ObjectStore, doc: DocumentRow) -> list[Problem]:
    """One problem per object missing, corrupt or unreadable (EIO, a denied or broken read): an audit exists
    to find damaged storage, so one object it cannot read is a finding, not the end of it (review rev17cli M3)."""
    problems = []
    for key, expected in zip(doc.keys(), (doc.original_sha256, doc.pdfa_sha256, doc.meta_sha256)):
        try:
            if not objects.exists(key):
                problems.append(Problem("missing", key, doc.doc_id, "object not found"))
                continue
            actual = objects.sha256(key)
        except StorageError as e:
            problems.append(Problem("unreadable", key, doc.doc_id, str(e)))
            continue
        if actual != expected:
            problems.append(Problem("corrupt", key, doc.doc_id, f"SHA-256 {actual}, index has {expected}"))
    return problems


def _is_stale(doc: DocumentRow, now: str, stale_after: timedelta) -> bool:
    return datetime.fromisoformat(now) - datetime.fromisoformat(doc.created_at) >= stale_after


def repair_pending(objects: ObjectStore, index: Index, doc: DocumentRow, shared: set[str],
                   actor: str, tool: str, guard: Callable[[], None] | None = None) -> Problem:
    """Complete an interrupted store whose objects all made it, else clear its partial objects and row."""
    intact = [objects.is_intact(k, s) for k, s in zip(doc.keys(), (doc.original_sha256, doc.pdfa_sha256,
                                                                    doc.meta_sha256))]
    if all(intact):
        detail = "interrupted store completed from its verified objects"
        meta = b"".join(objects.read_chunks(doc.meta_key))
        index.finalize(doc, sidecar_pages(meta), [Event(kind, "success", actor, tool, doc_id=doc.doc_id,
                                                        case_id=doc.case_id, checksum=doc.pdfa_sha256, detail=detail)
                                                  for kind in ("stored", "verified")], sidecar_signatures(meta),
                       guard)
        return Problem("completed", doc.pdfa_key, doc.doc_id, detail)
    for key in doc.keys():
        if key not in shared:
            with contextlib.suppress(StorageError):  # a WORM bucket refuses; verify then reports an orphan
                objects.delete(key)
    index.delete_pending(int(doc.doc_id))
    return Problem("cleared", doc.original_key, doc.doc_id, "incomplete store removed; store the source again")


def check_signatures(objects: ObjectStore, doc: DocumentRow, recorded: list[SignatureRow], trust: str,
                     found_already: list[Problem] = ()) -> list[Problem]:
    """The PDF/A's recorded signatures must still be there and check out (integrity, whole file, chain
    to ``trust``, certificate valid at signing time, revocation when embedded). ``found_already``: the
    document's object problems (check_document); a PDF/A missing or unreadable there is not read again."""
    from digitize.sigcheck import check_file

    if not recorded or any(p.key == doc.pdfa_key and p.kind in ("missing", "unreadable") for p in found_already):
        return []  # unsigned (stored before signing was configured), or already reported missing/unreadable
    # a corrupt PDF/A is still read: its broken signature is the finding that tells tampering from bit rot
    with work_dir("verify") as tmp:
        path = tmp / "pdfa.pdf"
        try:
            objects.download(doc.pdfa_key, path)
        except StorageError as e:
            return [Problem("unreadable", doc.pdfa_key, doc.doc_id, str(e))]
        result = check_file(path, trust)
    if result.error:
        return [Problem("signature", doc.pdfa_key, doc.doc_id, result.error)]
    found = {s.field: s for s in result.signatures}
    problems = []
    for sig in recorded:
        check = found.get(sig.field)
        if check is None:
            problems.append(Problem("signature", doc.pdfa_key, doc.doc_id, f"signature {sig.field} is gone"))
        elif not check.ok:
            problems.append(Problem("signature", doc.pdfa_key, doc.doc_id,
                                    f"signature by {check.signer}: {'; '.join(check.problems)}"))
        elif check.cert_sha256 != sig.cert_sha256:
            problems.append(Problem("signature", doc.pdfa_key, doc.doc_id,
                                    f"signed with certificate {check.cert_sha256[:16]}, index has {sig.cert_sha256[:16]}"))
    return problems


def verify(objects: ObjectStore, index: Index, case_id: str | None, actor: str, tool: str,
           stale_after: timedelta, clock: Callable[[], str], trust: str = "",
           link_secret: bytes | None = None) -> VerifyReport:
    """``link_secret``: link records must be signed with it; an unsigned or badly signed one is a problem
    (one a bucket writer without the key made, or one written before the key was set: share again to re-sign)."""
    report = VerifyReport(scope=case_id or "all")
    now = clock()
    stale = [d for d in index.pending_documents()
             if (case_id is None or d.case_id == case_id) and _is_stale(d, now, stale_after)]
    for doc in stale:
        try:  # a pending row whose writer still lives (it holds the claim) is that writer's to finish
            with claim(index, doc.original_sha256, doc.source_pages, wait=0) as held:
                current = index.document(int(doc.doc_id))
                if current is None or current.status != "pending":
                    continue  # stored or cleared meanwhile
                shared = {k for other in index.stored_documents() + index.pending_documents()
                          if other.doc_id != doc.doc_id for k in other.keys()}
                report.repaired.append(repair_pending(objects, index, current, shared, actor, tool, held.check))
        except ClaimBusy:
            log.info("document %s is being stored by a live writer; left to it", doc.doc_id)
    report.repaired += [Problem("partial", name, None, "temp file of an interrupted upload removed")
                        for name in objects.sweep_parts(case_prefix(case_id) if case_id else "", stale_after)]
    events: list[Event] = []
    try:
        _check_documents(objects, index, case_id, actor, tool, trust, report, events)
    except BaseException:
        with contextlib.suppress(Exception):  # an audit that dies still records what it checked
            index.add_events(events)
        raise
    index.add_events(events)
    _find_orphans(objects, index, case_id, link_secret, report)
    return report


def _check_documents(objects: ObjectStore, index: Index, case_id: str | None, actor: str, tool: str, trust: str,
                     report: VerifyReport, events: list[Event]) -> None:
    """Each document's objects and signatures; its fixity-checked event into ``events``, written every
    EVENT_BATCH documents (a long audit that then dies has recorded most of what it checked)."""
    docs = index.documents(case_id) if case_id else index.stored_documents()
    signed = index.signatures([int(d.doc_id) for d in docs])
    good: str | None = None  # an object this audit read fine: what the outage probe reads
    failed: set[str] = set()
    for doc in docs:
        problems = check_document(objects, doc)
        if any(p.kind == "unreadable" for p in problems):
            failed.update(p.key for p in problems)
            good = _probe(objects, good, index, failed)  # the store down: exit 10, this document unrecorded
            problems = check_document(objects, doc)  # a blip the per-object retries did not outlast
        elif good is None and not problems:
            good = doc.meta_key
        problems += check_signatures(objects, doc, signed.get(int(doc.doc_id), []), trust, problems)
        report.documents += 1
        report.objects += len(doc.keys())
        report.problems += problems
        events.append(_checked(doc, problems, actor, tool))
        if len(events) >= EVENT_BATCH:
            index.add_events(events)
            events.clear()


def _probe(objects: ObjectStore, good: str | None, index: Index, failed: set[str]) -> str | None:
    """StorageError unless the store still serves an object known to be good: the one this audit read fine,
    else the newest stored document's sidecar (damage clusters in old data; an outage hits every read). A bucket
    that answers while every GET fails (read quorum lost, GetObject denied, KMS down) is an outage, not N damaged
    objects (review3 r3ops R2). Returns the key it read."""
    objects.probe()
    key = good or next((d.meta_key for d in reversed(index.stored_documents()) if d.meta_key not in failed), None)
    if key is None:
        return None  # nothing else to read: the bucket answering is all there is to go on
    try:
        for _ in objects.read_chunks(key):
            break  # its first block: the store serves reads (a generator dropped here is closed)
    except StorageError as e:
        raise StorageError(f"object store unavailable: it answers but cannot serve {key}, an object "
                           f"{'read fine in this audit' if good else 'not known to be damaged'} ({e})") from None
    return key


def _checked(doc: DocumentRow, problems: list[Problem], actor: str, tool: str) -> Event:
    return Event("fixity-checked", "failure" if problems else "success", actor, tool, doc_id=doc.doc_id,
                 case_id=doc.case_id, checksum=doc.pdfa_sha256,
                 detail="; ".join(f"{p.kind} {p.key}" for p in problems) or "3 objects match")


def _find_orphans(objects: ObjectStore, index: Index, case_id: str | None, link_secret: bytes | None,
                  report: VerifyReport) -> None:
    known = index.all_object_keys()
    metas: dict[str, str] | None = None
    for key in objects.list_keys(case_prefix(case_id) if case_id else ""):
        if key in known or key.startswith(STAGING):  # queued originals wait there
            continue
        if is_link_key(key):  # a document's place in another dossier: fine if it names an indexed one
            if metas is None:
                metas = {d.meta_key: d.meta_sha256 for d in index.stored_documents()}
            record = read_link(objects, key)
            if record is not None and link_secret is not None and read_link(objects, key, link_secret) is None:
                report.problems.append(Problem("link", key, None, "link record unsigned or not signed with "
                                                                  "store.link_secret (forged, or older than the key)"))
                continue
            if record is not None and metas.get(record.meta_key) == record.meta_sha256:
                continue
            report.problems.append(Problem("orphan", key, None, "link record naming no indexed document here"))
            continue
        report.problems.append(Problem("orphan", key, None, "object not referenced by the index"))
