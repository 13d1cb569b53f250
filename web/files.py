"""Downloads shared by the API and the pages: one object, the dossier ZIP, a page image.

A document up to WHOLE_MAX is read whole from the object store and sent only once its SHA-256 matched
(a mismatch is an error answer carrying none of it); a larger one is streamed, its SHA-256 checked while
it streams (the last piece is held back until it matched; on a mismatch the response is aborted, so no
client gets a complete wrong file). The dossier ZIP and page images are built in a private work folder by the gate (SHA-256
checked on the way out) and removed after the response is sent. File names in Content-Disposition are the ASCII slugs of
storage/retrieval.py, never the stored title or the name a scan was sent under.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from pathlib import Path
from typing import Callable

from fastapi import Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from digitize.fsutil import work_dir
from storage.access import Gate
from storage.retrieval import output_name

from .lanes import keep_turn

KINDS = {"pdfa": "application/pdf", "original": "application/octet-stream"}
ORIGINAL_TYPES = {"pdf": "application/pdf", "tif": "image/tiff", "tiff": "image/tiff", "jpg": "image/jpeg",
                  "jpeg": "image/jpeg", "png": "image/png"}
THUMB_DPI, VIEW_DPI, MAX_DPI = 24, 110, 200
# objects up to this size are read into memory, SHA-256 checked and only then sent (a corrupt one is a 500
# "fixity-failed" with no byte of it); larger ones stream, checked on the way, their last piece held back
WHOLE_MAX = 1 << 20  # held in memory until a (possibly slow) client has read it: kept small


def disposition(name: str, inline: bool = False) -> str:
    safe = "".join(c for c in name if c.isascii() and (c.isalnum() or c in "-_.")) or "download"
    return f'{"inline" if inline else "attachment"}; filename="{safe}"'


def _temp() -> tuple[contextlib.ExitStack, Path]:
    stack = contextlib.ExitStack()
    return stack, stack.enter_context(work_dir("portal"))


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range of a Range header as (first, last); None for none or several (the whole object
    is sent then, as RFC 9110 allows); RangeNotSatisfiable if it lies outside the object."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            start, end = size - int(last), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    start = max(start, 0)
    if start > end or start >= size:
        raise RangeNotSatisfiable(size)
    return start, end


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int):
        super().__init__(f"bytes */{size}")
        self.size = size


def document_response(request: Request, gate: Gate, case_id: str, sequence: int, kind: str,
                      inline: bool = False) -> Response:
    """One object streamed from the store, SHA-256 checked on the way (see Gate.stream); ETag, Range.
    The gate judges and looks up the document once (Gate.stream), for the answer's headers too."""
    download = gate.stream(case_id, sequence, kind)
    doc, sha = download.doc, download.sha256
    etag = f'"{sha}"'
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        gate.unsent(doc, kind, "not modified")
        return Response(status_code=304, headers={"etag": etag})
    name = output_name(doc, kind == "original")
    media = ORIGINAL_TYPES.get(name.rsplit(".", 1)[-1], KINDS[kind]) if kind == "original" else KINDS[kind]
    headers = {"etag": etag, "content-disposition": disposition(name, inline), "x-content-sha256": sha,
               "accept-ranges": "bytes"}
    wanted = request.headers.get("range", "")
    if_range = request.headers.get("if-range", "").strip()
    status = 200
    if wanted and (not if_range or if_range == etag):
        try:
            download.byte_range = byte_range(wanted, download.size)
        except RangeNotSatisfiable as e:
            gate.unsent(doc, kind, "range not satisfiable", "failure")
            return Response(status_code=416, headers={"content-range": f"bytes */{e.size}", "etag": etag})
        if download.byte_range:
            status = 206
            headers["content-range"] = f"bytes {download.byte_range[0]}-{download.byte_range[1]}/{download.size}"
    headers["content-length"] = str(download.length)
    if download.size <= WHOLE_MAX:  # read and checked whole, then sent in one piece: no per-chunk thread hops
        return Response(download.read(), status_code=status, media_type=media, headers=headers)
    download.announce()  # committed before the first byte (web/events.py), as a whole read's event is
    return StreamingResponse(iter(download), status_code=status, media_type=media, headers=headers)


class _SentThen(FileResponse):
    """A FileResponse that runs ``done`` once it ended, its body sent or not: Starlette runs a BackgroundTask
    only after a complete send, so a client gone mid-body would leave the work folder and the lane place."""

    def __init__(self, *args, done: Callable[[], None], **kwargs):
        super().__init__(*args, **kwargs)
        self.done = done

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.done()


def dossier_response(request: Request, gate: Gate, case_id: str, original: bool = False) -> Response:
    """The ZIP is written once, each member straight from the store (review rev17cli L4), in a private work
    folder removed after the response. Its place in the ZIP lane is held until then (review r2cli N5): the
    lane bounds the finished ZIPs waiting in TMPDIR for their clients too, not only the builds."""
    stack, tmp = _temp()
    try:
        target = tmp / "dossier.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:  # PDFs and scans are compressed already
            got = gate.dossier(case_id, zf, original)
    except BaseException:
        stack.close()
        raise
    release = keep_turn(request)

    def done() -> None:
        try:
            stack.close()
        finally:
            release()

    return _SentThen(target, media_type="application/zip", done=done,
                     headers={"content-disposition": disposition(f"{got.case_id}.zip")})


def page_png(gate: Gate, case_id: str, sequence: int, page: int, dpi: int) -> Response:
    from digitize.errors import NotFoundError
    from digitize.poppler import render_page

    doc = gate.document(case_id, sequence)
    if not 1 <= page <= doc.pages:
        raise NotFoundError(f"page {page} of document {sequence} not found")
    with work_dir("portal") as tmp:
        gate.fetch(case_id, sequence, "pdfa", tmp / "doc.pdf", purpose=f"viewed page {page} of")
        image = render_page(tmp / "doc.pdf", page - 1, min(max(dpi, THUMB_DPI), MAX_DPI))
    out = io.BytesIO()
    image.save(out, "PNG", optimize=dpi <= THUMB_DPI)
    return Response(out.getvalue(), media_type="image/png", headers={"cache-control": "no-store"})
