"""Server-rendered portal pages (Jinja2): login, search, case, page viewer, scanning desk, administration.

Like the API, every page takes its data from :class:`storage.access.Gate` (the :func:`web.app.page_gate`
dependency logs the session's user in, or redirects to the login page); the handlers only parse forms,
check the CSRF token and render. Strings come from web/i18n.py (Vietnamese by default, English on request).
"""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from digitize.errors import BadArgsError, NotFoundError
from digitize.identifiers import is_case_id
from pipelines import failed
from storage.access import PASSWORD_LOGIN, AuthenticationError, Gate, Perm, SearchFilters, authenticate_password

from . import files, lanes, oidc
from .app import page_gate
from .auth import check_csrf, client_address, csrf_token, end_session, start_session
from .crosssite import REDIRECT_SAFE
from .i18n import DEFAULT, LANGUAGES, translate
from .throttle import LoginBusy

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
PAGE_SIZE = 20
RECENT_JOBS = 50  # the desk's list of recent uploads
MAX_FAILED = 500  # failed uploads listed on the desk (to retry), newest first
INBOX_REF = re.compile(r"[0-9a-f]{32}")
PUBLIC_PATHS = ("/login", "/lang", "/static", "/healthz", "/api/v1/openapi.json")


def lang_of(request: Request) -> str:
    lang = request.session.get("lang", DEFAULT)
    return lang if lang in LANGUAGES else DEFAULT


def render(request: Request, template: str, status: int = 200, gate: Gate | None = None, **context) -> HTMLResponse:
    lang = lang_of(request)
    return templates.TemplateResponse(request, template, {
        "t": lambda key: translate(key, lang), "lang": lang, "csrf": csrf_token(request),
        "principal": gate.principal if gate else None, "Perm": Perm, **context}, status_code=status)


def local_target(target: str | None) -> str:
    """A path on this site, quoted as RedirectResponse quotes, or "/". It goes out raw in a meta refresh and a
    link (signed_in.html), where a browser drops tab/CR/LF before parsing (``/<TAB>/evil.example`` is then
    ``//evil.example``, another host: review web16 M1): so no control character at all, a plain path (``/``
    followed by neither ``/`` nor ``\\``, no scheme, no host), and none of the sign-on's own pages (a loop)."""
    if (not target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target) or not target.startswith("/")
            or target[1:2] in ("/", "\\") or "\\" in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path == "/login" or parts.path.startswith("/login/"):
        return "/"
    return quote(target, safe=REDIRECT_SAFE)


def check_password(pool, name: str, password: str):
    with pool.archive() as archive:
        return authenticate_password(archive.index, name, password)


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def render_error(request: Request, status: int, message: str) -> HTMLResponse:
        return render(request, "error.html", status=status, status_code=status, message=message)

    app.state.render_error = render_error

    # -- public: login, language -----------------------------------------------------------------
    sso = oidc.enabled(app.state.settings)

    def render_login(request: Request, failed: str = "", status: int = 200, next: str = "/") -> HTMLResponse:
        return render(request, "login.html", status=status, next=local_target(next), failed=failed, sso=sso)

    oidc.install(app, app.state.settings, render_login)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return render_login(request, next=next)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request, name: str = Form(..., max_length=64),
                    password: str = Form(..., max_length=1024), csrf: str = Form(""), next: str = Form("/")) -> Response:
        """Async, so that a slowed login waits on the event loop, not in one of the worker threads that all
        requests share; the throttle and the password check (argon2, the index) run in those threads."""
        check_csrf(request, csrf)
        throttle = request.app.state.throttle
        address = client_address(request)
        delay = await run_in_threadpool(throttle.admits, name, address)  # a refusal here writes nothing
        if delay is None:
            return render_login(request, "login_throttled", 429, next)
        # a name guessed from many addresses: slowed, never locked; the wait holds no thread and no archive
        await asyncio.sleep(delay)
        try:  # a few checks at once per process, first come first served (web/throttle.py)
            async with throttle.password_check():
                attempt = await run_in_threadpool(throttle.reserve, name, address)  # counted before the check
                if attempt is None:
                    return render_login(request, "login_throttled", 429, next)
                try:
                    principal = await run_in_threadpool(check_password, request.app.state.pool, name, password)
                except AuthenticationError:
                    return render_login(request, "login_failed", 401, next)  # counted already, by reserve
                except BaseException:
                    await run_in_threadpool(throttle.release, attempt, False)  # never checked: not a guess
                    raise
        except LoginBusy:  # never checked: not a guess at the name, but a request its address spent (in memory)
            await run_in_threadpool(throttle.refused_busy, name, address)
            return render_login(request, "login_throttled", 429, next)
        await run_in_threadpool(throttle.release, attempt, True)
        start_session(request, principal, PASSWORD_LOGIN)
        return RedirectResponse(local_target(next), status_code=303)

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf: str = Form("")) -> Response:
        check_csrf(request, csrf)
        end_session(request, request.app.state.sessions_ended)
        return RedirectResponse("/login", status_code=303)

    @app.get("/lang/{code}", include_in_schema=False)
    def switch_language(request: Request, code: str, next: str = "/") -> Response:
        if code in LANGUAGES:
            request.session["lang"] = code
        return RedirectResponse(local_target(next), status_code=303)

    # -- officers ----------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def home(gate: Gate = Depends(page_gate)) -> Response:
        return RedirectResponse("/search" if gate.principal.can(Perm.read) else "/desk", status_code=303)

    @app.get("/search", include_in_schema=False)
    def search(request: Request, q: str = "", agency: str = "", procedure: str = "", received_from: str = "",
               received_to: str = "", status: str = "", page: int = 1, gate: Gate = Depends(page_gate)) -> Response:
        gate.require(Perm.read)
        filters = SearchFilters(agency, procedure, received_from, received_to, status)
        page = max(1, min(page, 500))
        result, error = None, ""
        if is_case_id(q) and (found := gate.find_case(q)):  # a case ID typed in the box opens its case
            return RedirectResponse(f"/cases/{found}", status_code=303)
        if q.strip():
            try:
                result = gate.search(q[:500], filters, PAGE_SIZE, (page - 1) * PAGE_SIZE)
            except BadArgsError as e:
                error = str(e)
        pages = math.ceil(result.total / PAGE_SIZE) if result else 0
        params = {k: v for k, v in dict(q=q, agency=agency, procedure=procedure, received_from=received_from,
                                        received_to=received_to, status=status).items() if v}
        return render(request, "search.html", gate=gate, q=q, filters=filters, result=result, error=error,
                      page=page, pages=pages, query=lambda n: "/search?" + urlencode({**params, "page": n}))

    @app.get("/cases/{case_id}", include_in_schema=False)
    def case_page(request: Request, case_id: str, gate: Gate = Depends(page_gate)) -> Response:
        record, docs = gate.case(case_id)
        return render(request, "case.html", gate=gate, case=record, docs=docs, events=gate.events(record.case_id),
                      signatures=gate.signatures(record.case_id, docs))

    @app.get("/cases/{case_id}/documents/{sequence}/view", include_in_schema=False)
    def viewer(request: Request, case_id: str, sequence: int, page: int = 1,
               gate: Gate = Depends(page_gate)) -> Response:
        doc = gate.document(case_id, sequence)
        if not 1 <= page <= max(doc.pages, 1):
            raise NotFoundError(f"page {page} not found")
        return render(request, "viewer.html", gate=gate, case_id=doc.case_id, doc=doc, page=page)

    @app.get("/cases/{case_id}/documents/{sequence}/pages/{page}.png", include_in_schema=False)
    def page_image(case_id: str, sequence: int, page: int, size: str = "thumb",
                   gate: Gate = Depends(page_gate)) -> Response:
        return files.page_png(gate, case_id, sequence, page, files.VIEW_DPI if size == "view" else files.THUMB_DPI)

    @app.get("/cases/{case_id}/documents/{sequence}/{kind}", include_in_schema=False)
    def download(request: Request, case_id: str, sequence: int, kind: str,
                 gate: Gate = Depends(page_gate, scope="function")) -> Response:
        if kind not in files.KINDS:
            raise NotFoundError(f"{kind} not found")
        return files.document_response(request, gate, case_id, sequence, kind)

    @app.get("/cases/{case_id}/dossier.zip", include_in_schema=False)
    def dossier(case_id: str, request: Request, gate: Gate = Depends(lanes.zip_page_gate, scope="function")) -> Response:
        return files.dossier_response(request, gate, case_id)

    # -- scanning desk -----------------------------------------------------------------------------
    @app.get("/desk", include_in_schema=False)
    def desk(request: Request, linked: str = "", gate: Gate = Depends(page_gate)) -> Response:
        gate.require(Perm.upload)
        from .api import job_visible

        jobs = request.app.state.uploads.jobs(job_visible(gate))
        failed_jobs = [j for j in jobs if j.state == "failed"][:MAX_FAILED]  # from all: newer jobs never hide
        unmatched = gate.unmatched() if gate.principal.can(Perm.link) else []  # a failed one (rev17desk M2)
        inbox = gate.inbox_failures(failed.list_failed(failed.failed_dir(request.app.state.settings)))
        inbox = inbox[:failed.MAX_FILES]  # after the agency filter: others' files never hide one's own
        return render(request, "desk.html", gate=gate, jobs=jobs[:RECENT_JOBS], failed=failed_jobs,
                      unmatched=unmatched, linked=linked, inbox=inbox)

    @app.post("/desk/upload", include_in_schema=False)
    async def desk_upload(request: Request, gate: Gate = Depends(page_gate)) -> Response:
        from .api import job_json, receive_upload

        gate.require(Perm.upload)
        check_csrf(request, request.headers.get("x-csrf-token"))  # the desk's script sends it as a header
        case_id = request.query_params.get("case_id", "").strip() or None
        job = await receive_upload(request, gate, case_id)
        return JSONResponse(job_json(job), status_code=202)

    @app.get("/desk/jobs/{job_id}", include_in_schema=False)
    def desk_job(request: Request, job_id: str, gate: Gate = Depends(page_gate)) -> Response:
        from .api import job_json, visible_job

        job = visible_job(request, gate, job_id)
        return JSONResponse({**job_json(job), "label": translate("state_" + job.state, lang_of(request))})

    @app.post("/desk/jobs/{job_id}/retry", include_in_schema=False)
    def desk_retry(request: Request, job_id: str, case_id: str = Form("", max_length=64), csrf: str = Form(""),
                   gate: Gate = Depends(page_gate)) -> Response:
        """A failed upload, linked to a case (or none) and tried again on the kept scan."""
        from .api import visible_job

        check_csrf(request, csrf)
        job = visible_job(request, gate, job_id)
        target = gate.scoped_case_id(case_id, Perm.upload) if case_id.strip() else None
        gate.require(Perm.upload)
        request.app.state.uploads.retry(job, target, gate.upload_scope())
        return RedirectResponse("/desk", status_code=303)

    @app.post("/desk/jobs/{job_id}/dismiss", include_in_schema=False)
    def desk_dismiss(request: Request, job_id: str, csrf: str = Form(""), confirm: str = Form("", max_length=8),
                     gate: Gate = Depends(page_gate)) -> Response:
        """A failed upload given up by its sender (or an archivist): its kept scan deleted, gone from the failed
        list; only with the form's "delete the scan" box ticked, since it may be the only copy."""
        from .api import visible_job

        check_csrf(request, csrf)
        job = visible_job(request, gate, job_id)
        if confirm != "yes":
            raise BadArgsError("tick the box to confirm that the kept scan is to be deleted")
        gate.dismiss_upload(job, lambda: request.app.state.uploads.dismiss(job, gate.principal.actor))
        return RedirectResponse("/desk", status_code=303)

    @app.post("/desk/inbox/{ref}/retry", include_in_schema=False)
    def desk_inbox_retry(request: Request, ref: str, case_id: str = Form("", max_length=64), csrf: str = Form(""),
                         gate: Gate = Depends(page_gate)) -> Response:
        """A file the watcher put in failed/, linked to a case (or none) and converted again as an upload."""
        check_csrf(request, csrf)
        folder = failed.failed_dir(request.app.state.settings)
        files = failed.list_failed(folder) if INBOX_REF.fullmatch(ref) else []
        uploads = request.app.state.uploads
        gate.retry_inbox_failure(files, ref, case_id,
                                 lambda item, target: uploads.adopt(folder, item, gate.upload_scope(), target).job_id)
        return RedirectResponse("/desk", status_code=303)

    @app.post("/desk/link", include_in_schema=False)
    def desk_link(request: Request, doc_id: int = Form(...), case_id: str = Form(..., max_length=64),
                  csrf: str = Form(""), gate: Gate = Depends(page_gate)) -> Response:
        check_csrf(request, csrf)
        doc = gate.link(doc_id, case_id)
        return RedirectResponse("/desk?" + urlencode({"linked": doc.case_id}), status_code=303)

    # -- administration ----------------------------------------------------------------------------
    @app.get("/admin", include_in_schema=False)
    def admin(request: Request, gate: Gate = Depends(page_gate)) -> Response:
        users, tokens = gate.accounts()
        return render(request, "admin.html", gate=gate, users=users, tokens=tokens)

    @app.post("/admin/users/{name}/disable", include_in_schema=False)
    def admin_disable(request: Request, name: str, csrf: str = Form(""), gate: Gate = Depends(page_gate)) -> Response:
        check_csrf(request, csrf)
        gate.disable_user(name)
        return RedirectResponse("/admin", status_code=303)
