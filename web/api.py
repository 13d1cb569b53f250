"""REST API /api/v1 (Bearer tokens): case records, documents, uploads, jobs, search, events.

Every route takes the :func:`web.app.api_gate` dependency, which authenticates the token and hands the
route the archive as that principal may see it; the route only maps HTTP to a gate call and back.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Callable

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from digitize.errors import BadArgsError, NotFoundError, resource_fault
from storage.access import SEARCH_CACHE, Gate, Perm, SearchFilters
from storage.models import CaseRecord, DocumentRow, SignatureRow

from . import files, lanes
from .app import api_gate
from .uploads import UploadJob

router = APIRouter(prefix="/api/v1")
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"error": name, "message": "..."}}}}
    for code, name, text in [(400, "bad-request", "Bad case ID or parameters"),
                             (401, "unauthorized", "No token, or an unknown or revoked one"),
                             (403, "forbidden", "The token's role does not allow this"),
                             (404, "not-found", "Not found, or outside the token's agencies")]}


def plain_json(content: dict[str, Any]) -> Any:
    """A JSON answer of plain values (str, int, float, bool, None, lists, dicts), sent as it is: returned as a
    dict, FastAPI would validate it against the route's ``dict[str, Any]`` and walk it with jsonable_encoder
    first, for the same bytes (the annotation still documents the route in the OpenAPI document)."""
    return JSONResponse(content)


def signature_json(sig: SignatureRow) -> dict[str, Any]:
    return {"signer": sig.signer, "signing_time": sig.signing_time, "level": sig.level, "timestamp": sig.timestamp,
            "cert_sha256": sig.cert_sha256}


def document_json(doc: DocumentRow, signatures: list[SignatureRow] | None = None) -> dict[str, Any]:
    return {"signatures": [signature_json(s) for s in signatures or []],"sequence": doc.sequence, "doc_id": doc.doc_id, "title": doc.title, "doc_type": doc.doc_type,
            "pages": doc.pages, "ocr_confidence": doc.ocr_confidence, "original_sha256": doc.original_sha256,
            "pdfa_sha256": doc.pdfa_sha256, "source_name": doc.source_name, "stored_at": doc.stored_at}


def case_json(record: CaseRecord, docs: list[DocumentRow],
              signatures: dict[int, list[SignatureRow]] | None = None) -> dict[str, Any]:
    signatures = signatures or {}
    return {"case": asdict(record), "documents": [document_json(d, signatures.get(d.doc_id)) for d in docs]}


def job_json(job: UploadJob) -> dict[str, Any]:
    return {"job_id": job.job_id, "case_id": job.case_id, "state": job.state, "reason": job.reason,
            "file": job.name, "size": job.size, "sha256": job.sha256, "documents": job.documents,
            "created_at": job.created_at, "finished_at": job.finished_at or None}


@router.get("/cases/{case_id}", responses=ERROR_RESPONSES, summary="A case record and its documents in order")
def get_case(case_id: str, gate: Gate = Depends(lanes.case_gate, scope="function")) -> dict[str, Any]:
    record, docs = gate.case(case_id)
    return plain_json(case_json(record, docs, gate.signatures(record.case_id, docs)))


CASE_BODY_MAX = 64 * 1024  # a case record is a few hundred bytes; its fields have limits of their own
CASE_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "additionalProperties": True}, "example": {
        "procedure_code": "1.004616", "procedure_name": "Cấp giấy chứng nhận quyền sử dụng đất",
        "applicant": "Nguyễn Văn A", "received_date": "2024-10-15", "status": "Đang xử lý"}}}}}


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object, read up to ``limit`` bytes (413 beyond, before more is read): a body
    declared with Body() is read whole into memory first, however large (review rev17desk M3)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise HTTPException(413, f"the body is larger than {limit // 1024} KB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the body is larger than {limit // 1024} KB")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # deep nesting raises RecursionError (review2 r2desk M1)
        raise BadArgsError("the body is not valid UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise BadArgsError("the body must be a JSON object of case record fields")
    return data


@router.put("/cases/{case_id}", responses=ERROR_RESPONSES, openapi_extra=CASE_BODY,
            summary="Upsert a case record (one-stop system push)")
async def put_case(case_id: str, request: Request, gate: Gate = Depends(api_gate)) -> JSONResponse:
    record = await json_object(request, CASE_BODY_MAX)
    created, case = await run_in_threadpool(gate.upsert_case, case_id, record)
    return JSONResponse({"created": created, "case": asdict(case)}, status_code=201 if created else 200)


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}}}


async def receive_upload(request: Request, gate: Gate, case_id: str | None) -> UploadJob:
    """Scope first (before the body is read), then the file into its private folder, then the queue."""
    if case_id:
        case_id = await run_in_threadpool(gate.scoped_case_id, case_id, Perm.upload)
    else:
        gate.require(Perm.upload)
    queue = request.app.state.uploads
    length = request.headers.get("content-length", "")
    if not length.isdigit():  # a chunked body would be spooled to disk whole before any size check
        raise BadArgsError("send the upload with a Content-Length header (chunked uploads are refused)")
    if int(length) > queue.max_bytes + 65536:
        raise BadArgsError(f"the upload is larger than {request.app.state.settings.web.max_upload_mb} MB")
    try:  # a file over 1 MB spools to TMPDIR: a full disk there is a 503 too (review2 r2desk R2-L3)
        form = await request.form(max_files=1, max_fields=5)
    except OSError as e:
        raise resource_fault(e, "cannot receive the upload") or e
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise BadArgsError("send the scan as a multipart form field named 'file'")
    try:
        job, _ = await run_in_threadpool(queue.receive, upload.file, upload.filename or "", gate.upload_scope(),
                                         case_id)
    finally:
        await form.close()
    submitted: list[UploadJob] = []
    try:
        await run_in_threadpool(gate.accept_upload, case_id, job.name, job.sha256)
        # its lock file and job.json are written in a worker thread too, not on the event loop
        await run_in_threadpool(lambda: submitted.append(queue.submit(job)))
    except BaseException:
        if not submitted:  # cancelled or refused before it was queued: nothing may stay behind
            queue.discard(job)
        raise
    return submitted[0]


@router.post("/cases/{case_id}/documents", status_code=202, responses=ERROR_RESPONSES, openapi_extra=UPLOAD_BODY,
             summary="Upload a scan into a case: converted, stored and indexed in the background")
async def post_document(case_id: str, request: Request, gate: Gate = Depends(api_gate)) -> JSONResponse:
    job = await receive_upload(request, gate, case_id)
    return JSONResponse({**job_json(job), "status_url": f"/api/v1/jobs/{job.job_id}"}, status_code=202,
                        headers={"location": f"/api/v1/jobs/{job.job_id}"})


def job_visible(gate: Gate) -> Callable[[UploadJob], bool]:
    """The gate's visibility rule asked about a saved job (every list and look-up of jobs uses this one)."""
    return lambda job: gate.visible_job(job.case_id, job.owner, job.filed, job.sender, job.place_case_id)


def visible_job(request: Request, gate: Gate, job_id: str) -> UploadJob:
    """The job if the gate lets this principal see it (asked before the job is followed or touched), else 404."""
    job = request.app.state.uploads.get(job_id, job_visible(gate))
    if job is None:
        raise NotFoundError(f"job {job_id} not found")
    return job


@router.get("/jobs/{job_id}", responses=ERROR_RESPONSES, summary="An upload job's state and, when done, its documents")
def get_job(job_id: str, request: Request, gate: Gate = Depends(api_gate)) -> dict[str, Any]:
    return job_json(visible_job(request, gate, job_id))


@router.get("/cases/{case_id}/documents/{sequence}/pdfa", responses=ERROR_RESPONSES, response_class=Response,
            summary="The PDF/A copy (ETag = SHA-256, Range requests)")
def get_pdfa(case_id: str, sequence: int, request: Request, gate: Gate = Depends(api_gate, scope="function")) -> Response:
    return files.document_response(request, gate, case_id, sequence, "pdfa")


@router.get("/cases/{case_id}/documents/{sequence}/original", responses=ERROR_RESPONSES, response_class=Response,
            summary="The original as received (ETag = SHA-256, Range requests)")
def get_original(case_id: str, sequence: int, request: Request, gate: Gate = Depends(api_gate, scope="function")) -> Response:
    return files.document_response(request, gate, case_id, sequence, "original")


@router.get("/cases/{case_id}/dossier.zip", responses=ERROR_RESPONSES, response_class=Response,
            summary="The whole e-dossier as a ZIP with manifest.json (each file SHA-256 checked)")
def get_dossier(case_id: str, request: Request, original: bool = False,
                gate: Gate = Depends(lanes.zip_gate, scope="function")) -> Response:  # web/lanes.py
    return files.dossier_response(request, gate, case_id, original)


@router.get("/cases/{case_id}/events", responses=ERROR_RESPONSES, summary="The case's access and processing log")
def get_events(case_id: str, gate: Gate = Depends(api_gate)) -> dict[str, Any]:
    return {"events": [asdict(e) for e in gate.events(case_id)]}


@router.get("/search", responses=ERROR_RESPONSES, summary="Full-text search, accents optional, within the token's scope")
def search(q: str = Query(..., min_length=1, max_length=500), agency: str = "", procedure: str = "",
           received_from: str = "", received_to: str = "", status: str = "",
           limit: int = Query(20, ge=1, le=100), offset: int = Query(0, ge=0, le=10000),
           gate: Gate = Depends(lanes.search_gate, scope="function")) -> dict[str, Any]:  # web/lanes.py
    page = gate.search(q, SearchFilters(agency, procedure, received_from, received_to, status), limit, offset)
    return Response(search_body(page, offset, limit), media_type="application/json")


BODY_MAX = 64 * 1024  # a larger search answer is rendered each time, not kept with its page


def search_body(page, offset: int, limit: int) -> bytes:
    """A search page's JSON answer, rendered once per page object and kept on the page itself
    (``SearchPage.derived``): a repeated search gets the search cache's very same page (its key holds the
    principal's scope, query, filters, limit and offset), so its answer is the same bytes, and they go
    when the cache drops the page (its age and byte bounds). A page not held by the cache (PostgreSQL,
    a huge page) dies with its request, body and all."""
    key = ("json", offset, limit)
    body = page.derived.get(key)
    if body is None:
        body = JSONResponse({"total": page.total, "capped": page.capped, "offset": offset, "limit": limit,
                             "hits": [dict(vars(h)) for h in page.hits]}).body  # flat: no asdict deep copy
        if len(body) <= BODY_MAX:  # kept in the cache's byte bound (two threads may both render it: the same
            SEARCH_CACHE.keep(page, key, body)  # bytes, either is kept)
    return body
