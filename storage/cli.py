"""Storage commands mounted on the main CLI: cases, search, show, get, verify.

Each command opens the archive from the settings object (``ctx.obj``), prints plain lines and raises
:mod:`digitize.errors` classes for failures, which the main CLI turns into one line and an exit code.
Every read goes through the one gate (storage/access.py) as the local operator (``cli:<login>``), so it is
recorded as the portal's are: the CLI has every agency's reach (whoever can run it against the archive
holds its files or credentials anyway), but no read of it is anonymous (review rev17cli M1).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import click

from digitize.errors import InputError, VerificationError
from digitize.terminal import printable

from .access import Gate, cli_principal
from .archive import Archive
from .models import DocumentRow, SearchHit, SignatureRow


URL_MINUTES = 60  # the longest a presigned link lives without --expires-long


def echo(line: str, err: bool = False) -> None:
    """Every line goes through printable(): titles, case fields, snippets and names come from imported data."""
    click.echo(printable(line), err=err)


@contextlib.contextmanager
def _archive(settings) -> Iterator[Archive]:
    archive = Archive.open(settings)
    try:
        yield archive
    finally:
        archive.close()


@contextlib.contextmanager
def _gate(settings) -> Iterator[Gate]:
    """The archive as the local operator reaches it: through the gate, every read recorded as ``cli:<login>``."""
    with _archive(settings) as archive:
        yield archive.gate(cli_principal(), via="cli")


def _document_line(doc: DocumentRow) -> str:
    confidence = f"{doc.ocr_confidence:.0f}%" if doc.ocr_confidence is not None else "-"
    return (f"{doc.sequence:>4}  doc {doc.doc_id:<6} {doc.pages:>3} p  OCR {confidence:>4}  "
            f"{doc.pdfa_sha256[:12]}  {doc.title or doc.doc_type or doc.source_name or '(untitled)'}")


def _signature_lines(signatures: list[SignatureRow]) -> list[str]:
    """As recorded at store time; `digitize verify` re-checks the bytes."""
    return [f"      signed ({s.level}) by {s.signer} at {s.signing_time}"
            + (f", timestamp {s.timestamp}" if s.timestamp else "") + f", cert {s.cert_sha256[:16]}"
            for s in signatures]


def _hit_lines(hit: SearchHit) -> tuple[str, str]:
    where = "case record" if hit.doc_id is None else (
        f"doc {hit.doc_id} #{hit.sequence}" + (" metadata" if hit.page == 0 else f" page {hit.page}"))
    head = f"{hit.case_id or '(unmatched)'}  {where}" + (f"  {hit.title}" if hit.title else "")
    return head, "    " + hit.snippet


@click.group("cases")
def cases_group() -> None:
    """Case records: import the one-stop system's export, list and link unmatched documents."""


@cases_group.command("import")
@click.argument("path", metavar="FILE.csv|FILE.json", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def cases_import(settings, path: Path) -> None:
    """Upsert case records from a CSV or JSON export; bad rows are listed and skipped."""
    with _archive(settings) as archive:
        result = archive.import_cases(path)
    echo(f"{result.created} cases created, {result.updated} updated, {len(result.errors)} rows with errors")
    for error in result.errors:
        echo(f"row {error.row}: {error.message}", err=True)
    if result.errors:
        raise InputError(f"{len(result.errors)} rows of {path} were not imported (see above)")


@cases_group.command("unmatched")
@click.pass_obj
def cases_unmatched(settings) -> None:
    """Documents stored without a known case; attach them with `digitize cases link`."""
    with _gate(settings) as gate:
        docs = gate.unmatched()
    for doc in docs:
        claimed = f"  (names unknown case {doc.case_id})" if doc.case_id else ""
        echo(f"doc {doc.doc_id:<6} {doc.stored_at or ''}  {doc.source_name} {doc.source_pages}".rstrip()
                   + f"  {doc.title}{claimed}")
    echo(f"{len(docs)} unmatched documents")


@cases_group.command("link")
@click.argument("doc_id", metavar="DOC", type=int)
@click.argument("case_id", metavar="CASE_ID")
@click.pass_obj
def cases_link(settings, doc_id: int, case_id: str) -> None:
    """Attach document DOC to CASE_ID (it goes to the end of that dossier)."""
    with _gate(settings) as gate:
        doc = gate.link(doc_id, case_id)
    echo(f"doc {doc.doc_id} is now #{doc.sequence} of {doc.case_id}")


@click.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_obj
def search_cmd(settings, query: tuple[str, ...], limit: int) -> None:
    """Full-text search of OCR text and metadata; accents optional (`quyen su dung dat` finds `quyền sử dụng đất`)."""
    with _gate(settings) as gate:
        hits = gate.search(" ".join(query), limit=limit).hits
    for hit in hits:
        head, snippet = _hit_lines(hit)
        echo(head)
        echo(snippet)
    echo(f"{len(hits)} results", err=True)


@click.command("show")
@click.argument("case_id", metavar="CASE_ID")
@click.pass_obj
def show_cmd(settings, case_id: str) -> None:
    """List a case's e-dossier: case record, then documents in dossier order."""
    with _gate(settings) as gate:
        case, docs = gate.case(case_id)
        signed = gate.signatures(case.case_id, docs)
    echo(f"case {case.case_id}")
    for label, value in [("procedure", " ".join(filter(None, [case.procedure_code, case.procedure_name]))),
                         ("agency", case.agency), ("applicant", case.applicant), ("received", case.received_date),
                         ("due", case.due_date), ("status", case.status),
                         *((k, v) for k, v in sorted(case.archive.items()))]:
        if value:
            echo(f"  {label}: {value}")
    echo(f"{len(docs)} documents:")
    for doc in docs:
        echo(_document_line(doc))
        for line in _signature_lines(signed.get(int(doc.doc_id), [])):
            echo(line)
    if docs:
        echo(f"{len(signed)} of {len(docs)} documents signed")


@click.command("get")
@click.argument("case_id", metavar="CASE_ID")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the dossier and manifest.json into.")
@click.option("--original", is_flag=True, help="The originals as received instead of the PDF/A copies.")
@click.option("--url", "as_url", is_flag=True, help="Print presigned download URLs (S3 stores) instead of files.")
@click.option("--expires", type=click.IntRange(1, 7 * 24 * 60), default=60, show_default=True,
              help=f"Minutes a presigned URL stays valid (more than {URL_MINUTES} needs --expires-long).")
@click.option("--expires-long", is_flag=True, help="Allow --expires up to 7 days (10080 minutes).")
@click.pass_obj
def get_cmd(settings, case_id: str, out_dir: Path | None, original: bool, as_url: bool, expires: int,
            expires_long: bool) -> None:
    """Write every document of CASE_ID in dossier order, each SHA-256 checked, plus manifest.json.

    With --url: print presigned links instead (S3 stores). Issuing them is recorded; using them is not,
    nor is what they download checked: anyone holding a link reads the object until it expires."""
    if not as_url and out_dir is None:
        raise click.UsageError("give -o DIR (or --url for presigned links)")
    if expires > URL_MINUTES and not expires_long:
        raise click.UsageError(f"--expires over {URL_MINUTES} minutes needs --expires-long: a presigned link is a "
                               "bearer credential whose uses are not recorded")
    with _gate(settings) as gate:
        if as_url:
            for doc, url in gate.presigned_urls(case_id, timedelta(minutes=expires), original):
                echo(f"{doc.sequence:>4}  {url}")
            return
        got = gate.dossier(case_id, out_dir.absolute(), original)
    for file in got.files:
        echo(f"{file.sequence:>4}  {file.sha256[:12]}  {file.path}")
    echo(f"{len(got.files)} files verified; manifest {got.manifest}")


@click.command("verify")
@click.argument("files", metavar="[FILE.pdf...]", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--case", "case_id", metavar="CASE_ID", help="Check one case's documents and objects.")
@click.option("--all", "check_all", is_flag=True, help="Check every document and look for orphan objects (default).")
@click.pass_obj
def verify_cmd(settings, files: tuple[Path, ...], case_id: str | None, check_all: bool) -> None:
    """Fixity audit: re-read objects, compare SHA-256 with the index, check the PDF/As' signatures, report
    missing/corrupt/orphan objects and broken signatures. Given FILEs, check only their signatures."""
    if case_id and check_all:
        raise click.UsageError("use --case ID or --all, not both")
    if files:
        if case_id or check_all:
            raise click.UsageError("give FILEs, or --case/--all, not both")
        _verify_files(files, settings.sign.trust)
        return
    with _gate(settings) as gate:
        report = gate.verify(case_id, trust=settings.sign.trust)
    for repair in report.repaired:
        echo(f"repaired ({repair.kind}): " + (f"doc {repair.doc_id}" if repair.doc_id else repair.key)
             + f": {repair.detail}")
    for problem in report.problems:
        echo(f"{problem.kind}: {problem.key}" + (f" (doc {problem.doc_id})" if problem.doc_id else "")
                   + f": {problem.detail}")
    echo(f"checked {report.documents} documents, {report.objects} objects in {report.scope}: "
               f"{len(report.problems)} problems")
    if not report.ok:
        raise VerificationError(f"fixity check found {len(report.problems)} problems in {report.scope}")


def _verify_files(files: tuple[Path, ...], trust: str) -> None:
    from digitize.sigcheck import check_file

    broken = 0
    for path in files:
        result = check_file(path, trust)
        broken += not result.ok
        echo(f"{'ok' if result.ok else 'BROKEN'}: {path}: {result.summary()}")
    if broken:
        raise VerificationError(f"{broken} of {len(files)} files unsigned or with a broken signature")


@click.command("reindex")
@click.option("--unverified-links", is_flag=True,
              help="Restore link records unchecked although they are signed and store.link_secret is not set.")
@click.pass_obj
def reindex_cmd(settings, unverified_links: bool) -> None:
    """Rebuild a lost index (an empty one) from the object store: documents from their sidecars, their
    places in other dossiers from their link records. Objects that cannot be trusted are reported, not indexed."""
    from .archive import TOOL
    from .rebuild import rebuild_index

    with _archive(settings) as archive:
        report = rebuild_index(archive.objects, archive.index, cli_principal().actor, f"{TOOL} reindex",
                               archive.link_secret, unverified_links)
        if archive.link_secret is None and report.links:
            echo("warning: store.link_secret is not set: link records were restored unverified (a bucket writer "
                 "could have forged one)", err=True)
    for key, why in report.skipped:
        echo(f"skipped: {key}: {why}", err=True)
    echo(f"reindexed {report.documents} documents and {report.links} links; {len(report.skipped)} objects skipped")
    if report.skipped:
        raise VerificationError(f"{len(report.skipped)} objects could not be trusted and were not indexed")


COMMANDS: list = [cases_group, search_cmd, show_cmd, get_cmd, verify_cmd, reindex_cmd]


def _account_commands() -> list:
    from .accounts_cli import COMMANDS as accounts

    return accounts


COMMANDS += _account_commands()
