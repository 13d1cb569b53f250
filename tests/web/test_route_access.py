"""Every route of the app, taken from its route table: anonymous requests are refused, principals of
another agency get no data of this agency's case (404 where a case or job is named), and a principal of this
agency whose role lacks the route's permission is refused (403) with no data. A route added later fails
the table test until it is listed in REQUIRED (its permission) or PUBLIC, on purpose."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

from digitize.config import Settings
from pipelines import failed
from portal_data import CASE_A, PASSWORD, TEXT_A
from storage import access
from storage.access import ROLE_PERMS, Perm
from storage.archive import Archive
from web.app import API_PREFIX, create_app
from web.uploads import UploadJob

PUBLIC = {("GET", "/healthz"), ("GET", API_PREFIX + "/openapi.json"), ("GET", "/login"), ("POST", "/login"),
          ("GET", "/lang/{code}"), ("POST", "/logout"), ("GET", "/login/oidc"), ("GET", "/login/oidc/callback")}
NAMED = re.compile(r"\{(case_id|job_id|sequence|page|doc_id|ref)\}")
A = API_PREFIX
# The permission each non-public route needs (None: any logged-in principal). Review web15 M1: without it,
# a deleted role check (an officer listing and disabling users) went unnoticed.
REQUIRED: dict[tuple[str, str], Perm | None] = {
    ("GET", A + "/cases/{case_id}"): Perm.read, ("PUT", A + "/cases/{case_id}"): Perm.write_case,
    ("POST", A + "/cases/{case_id}/documents"): Perm.upload, ("GET", A + "/jobs/{job_id}"): Perm.upload,
    ("GET", A + "/cases/{case_id}/documents/{sequence}/pdfa"): Perm.read,
    ("GET", A + "/cases/{case_id}/documents/{sequence}/original"): Perm.read,
    ("GET", A + "/cases/{case_id}/dossier.zip"): Perm.read, ("GET", A + "/cases/{case_id}/events"): Perm.read,
    ("GET", A + "/search"): Perm.read,
    ("GET", "/"): None, ("GET", "/search"): Perm.read, ("GET", "/cases/{case_id}"): Perm.read,
    ("GET", "/cases/{case_id}/documents/{sequence}/view"): Perm.read,
    ("GET", "/cases/{case_id}/documents/{sequence}/pages/{page}.png"): Perm.read,
    ("GET", "/cases/{case_id}/documents/{sequence}/{kind}"): Perm.read,
    ("GET", "/cases/{case_id}/dossier.zip"): Perm.read,
    ("GET", "/desk"): Perm.upload, ("POST", "/desk/upload"): Perm.upload, ("GET", "/desk/jobs/{job_id}"): Perm.upload,
    ("POST", "/desk/jobs/{job_id}/retry"): Perm.upload, ("POST", "/desk/inbox/{ref}/retry"): Perm.upload,
    ("POST", "/desk/jobs/{job_id}/dismiss"): Perm.upload,
    ("POST", "/desk/link"): Perm.link,
    ("GET", "/admin"): Perm.admin, ("POST", "/admin/users/{name}/disable"): Perm.admin,
}
# A job is shown only to its owner or to those who may upload into its case: to others it does not exist (404).
HIDDEN = re.compile(r"\{job_id\}")
# Principals of agency A, one per role: page users and API tokens (the admin has every permission).
PAGE_USERS = {"scanner": "scanner-a", "officer": "officer-a", "archivist": "archivist-a"}
API_TOKENS = {"scanner": "scanner-a", "officer": "onestop-a", "archivist": "archivist"}


@pytest.fixture(scope="module")
def app_and_data(seeded):
    data_dir, tokens = seeded
    settings = Settings(data_dir=str(data_dir))
    settings.web.secure_cookies = False
    settings.watch.inbox = str(data_dir.parent / "route-inbox")  # a failed file of agency A for the desk
    failed_scan = Path(settings.watch.inbox) / "failed" / CASE_A / "01-scan.pdf"
    failed_scan.parent.mkdir(parents=True, exist_ok=True)
    failed_scan.write_bytes(b"%PDF-1.4 not a scan")
    failed_scan.with_name("01-scan.pdf.error.txt").write_text("Reason: damaged\n", encoding="utf-8")
    settings.web.oidc_issuer = "http://127.0.0.1:9/never-contacted"  # so the SSO routes are in the table too
    app = create_app(settings)
    with Archive.open(settings) as archive:
        docs = archive.documents(CASE_A)
        access.add_user(archive.index, PAGE_USERS["archivist"], "archivist", [], PASSWORD)
    job = UploadJob(uuid.uuid4().hex, "token:scanner-a", CASE_A, "a.png", 1, "0" * 64, state="done",
                    documents=[{"doc_id": str(docs[0].doc_id), "case_id": CASE_A}])
    app.state.uploads._jobs[job.job_id] = job
    secrets = {CASE_A, "Nguyễn Văn An", *(d.pdfa_sha256 for d in docs), *(d.original_sha256 for d in docs),
               TEXT_A[0][:30]}
    values = {"case_id": CASE_A, "sequence": "1", "page": "1", "job_id": job.job_id, "kind": "pdfa",
              "name": "officer-a", "code": "en", "doc_id": str(docs[0].doc_id),
              "ref": failed.list_failed(Path(settings.watch.inbox) / "failed")[0].ref}
    with TestClient(app) as client:
        yield app, tokens, secrets, values, client


def route_table(app) -> list[tuple[str, str]]:
    table = []
    for route in app.routes:
        if isinstance(route, Mount):
            assert route.path == "/static", f"unexpected mount {route.path}: add it to this test"
            continue
        assert isinstance(route, (APIRoute, Route)), route
        table += [(method, route.path) for method in sorted(route.methods - {"HEAD"})]
    return table


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def login(app, name: str) -> TestClient:
    client = TestClient(app)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"name": name, "password": PASSWORD, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


def send(client: TestClient, method: str, path: str, headers: dict | None = None):
    csrf_match = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text) if not path.startswith(
        API_PREFIX) else None
    csrf = csrf_match.group(1) if csrf_match else ""
    headers = {**(headers or {}), "x-csrf-token": csrf}
    kwargs: dict = {"headers": headers, "follow_redirects": False}
    if method == "PUT":
        kwargs["json"] = {"status": "changed"}
    elif method == "POST":
        if path.endswith("/documents") or path.endswith("/upload"):
            kwargs["files"] = {"file": ("scan.png", b"\x89PNG\r\n\x1a\n" + b"0" * 64, "image/png")}
            if path.endswith("/upload"):
                path += f"?case_id={CASE_A}"
        else:
            kwargs["data"] = {"csrf": csrf, "doc_id": "1", "case_id": CASE_A}
    return client.request(method, path, **kwargs)


def leaked(response, secrets: set[str]) -> list[str]:
    """Case data in the response; a refusal may repeat the case ID the request itself named."""
    echo = {CASE_A} if response.status_code >= 400 else set()
    return [s for s in secrets - echo if s in response.text]


def test_the_route_table_is_what_this_test_expects(app_and_data):
    app = app_and_data[0]
    table = route_table(app)
    assert PUBLIC <= set(table), "a public route disappeared: update PUBLIC"
    assert len(table) > len(PUBLIC) + 15
    assert set(table) - PUBLIC == set(REQUIRED), "a route without its permission in REQUIRED (or gone from it)"


@pytest.mark.parametrize("role", ["scanner", "officer", "archivist"])
@pytest.mark.parametrize("area", ["pages", "api"])
def test_a_role_lacking_a_routes_permission_is_refused_there(app_and_data, role, area):
    """Same agency, so only the role can refuse: 403 (the API's JSON says "forbidden") and no case data."""
    app, tokens, secrets, values, _ = app_and_data
    if area == "pages":
        client, headers = login(app, PAGE_USERS[role]), {}
    else:
        client, headers = TestClient(app), {"authorization": f"Bearer {tokens[API_TOKENS[role]]}"}
    tried = 0
    for (method, path), perm in REQUIRED.items():
        if path.startswith(API_PREFIX) != (area == "api") or perm is None or perm in ROLE_PERMS[role]:
            continue
        query = "?q=dat" if path.endswith("/search") else ""  # past the query's validation, to the gate
        r = send(client, method, fill(path, values) + query, headers)
        tried += 1
        refused = (403, 404) if HIDDEN.search(path) else (403,)
        assert r.status_code in refused, (role, method, path, r.status_code, r.text[:200])
        if area == "api" and r.status_code == 403:
            assert r.json()["error"] == "forbidden", (role, method, path, r.text)
        assert not leaked(r, secrets), (role, method, path, leaked(r, secrets))
    assert tried or (area, role) == ("api", "archivist"), "no route lacks this role's permission: check the table"


def test_anonymous_requests_are_refused_everywhere(app_and_data):
    app, _, secrets, values, client = app_and_data
    for method, path in route_table(app):
        if (method, path) in PUBLIC:
            continue
        anonymous = TestClient(app)
        r = send(anonymous, method, fill(path, values))
        if path.startswith(API_PREFIX):
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", (method, path, r.status_code)
        else:
            assert r.status_code in (303, 401, 403), (method, path, r.status_code)
            if r.status_code == 303:
                assert r.headers["location"].startswith("/login"), (method, path)
        assert not leaked(r, secrets), (method, path)


@pytest.mark.parametrize("who", ["onestop-b", "scanner-b", "officer-b", "user:scanner-b"])
def test_another_agency_gets_nothing_of_this_case(app_and_data, who):
    app, tokens, secrets, values, _ = app_and_data
    if who.startswith("user:") or who == "officer-b":
        client, headers, area = login(app, who.removeprefix("user:")), {}, "pages"
    else:
        client, headers, area = TestClient(app), {"authorization": f"Bearer {tokens[who]}"}, "api"
    for method, path in route_table(app):
        if (method, path) in PUBLIC or path.startswith(API_PREFIX) != (area == "api"):
            continue
        r = send(client, method, fill(path, values), headers)
        if NAMED.search(path):
            assert r.status_code in (403, 404), (who, method, path, r.status_code)
        else:
            assert r.status_code < 500, (who, method, path, r.status_code)
        assert not leaked(r, secrets), (who, method, path, leaked(r, secrets))


def test_the_filled_in_routes_do_reach_the_case_for_an_entitled_principal(app_and_data):
    """The control: the same requests by an archivist/admin succeed, so the 404s above are the scope's."""
    app, tokens, _, values, _ = app_and_data
    api = TestClient(app, headers={"authorization": f"Bearer {tokens['archivist']}"})
    pages = login(app, "admin")
    for method, path in route_table(app):
        if method != "GET" or not NAMED.search(path):
            continue
        client = api if path.startswith(API_PREFIX) else pages
        r = client.get(fill(path, values), follow_redirects=False)
        assert r.status_code == 200, (method, path, r.status_code, r.text[:200])
