"""Portal pages in-process: sessions, CSRF, login throttling, idle timeout, headers, language, redirects."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from digitize.config import Settings
from portal_data import AGENCY_A, CASE_A, CASE_B, PASSWORD, digitize, write_job
from web.app import create_app


@pytest.fixture(scope="module")
def app(seeded):
    settings = Settings(data_dir=str(seeded[0]))
    settings.web.secure_cookies = False
    settings.web.login_attempts = 3
    settings.web.session_idle = 2.0
    return create_app(settings)


def csrf_of(client: TestClient, path: str = "/login") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def login(app, name="officer-a", password=PASSWORD, csrf=None, address="testclient", **extra):
    client = TestClient(app, client=(address, 50000))
    token = csrf_of(client) if csrf is None else csrf
    return client, client.post("/login", data={"name": name, "password": password, "csrf": token, **extra},
                               follow_redirects=False)


def test_login_sets_a_hardened_session_cookie(app):
    _, r = login(app)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_secure_cookie_flag_by_default(seeded):
    app = create_app(Settings(data_dir=str(seeded[0])))
    _, r = login(app)
    assert "secure" in r.headers["set-cookie"].lower()


def test_login_without_the_csrf_token_is_refused(app):
    client, r = login(app, csrf="forged")
    assert r.status_code == 403
    assert client.get("/search", follow_redirects=False).status_code == 303


def test_logins_are_throttled_after_failures(app):
    for _ in range(3):
        assert login(app, name="scanner-a", password="wrong-password")[1].status_code == 401
    blocked = login(app, name="scanner-a")[1]
    assert blocked.status_code == 429  # even the right password waits now


def test_failures_from_one_address_do_not_lock_the_name_out_from_another(app):
    """Throttling by name alone let anyone lock an officer out for login_pause seconds."""
    for _ in range(5):
        assert login(app, name="officer-b", password="wrong-password", address="10.9.9.9")[1].status_code in (401, 429)
    assert login(app, name="officer-b", address="10.9.9.9")[1].status_code == 429  # the guesser waits
    assert login(app, name="officer-b", address="10.1.1.1")[1].status_code == 303  # the officer does not


def test_one_address_guessing_across_names_is_throttled(app):
    names = [f"nobody-{n}" for n in range(30)]  # 10 x login_attempts (3) failures from one address
    for name in names:
        assert login(app, name=name, password="wrong-password", address="10.7.7.7")[1].status_code == 401
    assert login(app, name="officer-b", address="10.7.7.7")[1].status_code == 429
    assert login(app, name="officer-b", address="10.7.7.8")[1].status_code == 303


def test_an_ipv6_guesser_is_counted_by_its_64_not_by_each_address(app):
    """One subscriber picks any of 2**64 addresses: counting each exactly gave unlimited guesses."""
    for n in range(1, 4):
        address = f"2001:db8:1:2::{n}"
        assert login(app, name="officer-b", password="wrong-password", address=address)[1].status_code == 401
    assert login(app, name="officer-b", address="2001:db8:1:2::ffff")[1].status_code == 429
    assert login(app, name="officer-b", address="2001:db8:1:3::1")[1].status_code == 303  # another network


def test_a_name_guessed_from_many_addresses_is_slowed_not_locked():
    from web.throttle import NAME_DELAY, NAME_FACTOR, LoginThrottle, address_group

    now = [0.0]
    throttle = LoginThrottle(attempts=3, pause=300, clock=lambda: now[0])
    assert address_group("::ffff:10.1.2.3") == "10.1.2.3" and address_group("2001:db8::1") == "2001:db8::/64"
    for n in range(3 * NAME_FACTOR):
        attempt = throttle.reserve("officer-a", f"10.0.{n // 250}.{n % 250}")  # counted as a failure
        assert attempt is not None and attempt.delay == 0.0
    assert throttle.reserve("officer-a", "10.200.0.1").delay == NAME_DELAY  # slowed, not refused
    assert throttle.reserve("officer-b", "10.200.0.1").delay == 0.0
    now[0] = 301.0
    assert throttle.reserve("officer-a", "10.200.0.2").delay == 0.0


def test_idle_sessions_end(app):
    client, _ = login(app, name="admin")
    assert client.get("/search", follow_redirects=False).status_code == 200
    time.sleep(2.5)
    r = client.get("/search", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_a_disabled_user_is_logged_out_at_the_next_request(app, seeded):
    digitize(seeded[0], "users", "add", "temp-officer", "--role", "officer", "--agency", "000.00.31.H56",
             "--password-stdin", stdin=PASSWORD + "\n")
    client, _ = login(app, name="temp-officer")
    assert client.get(f"/cases/{CASE_A}").status_code == 200
    digitize(seeded[0], "users", "disable", "temp-officer")
    assert client.get(f"/cases/{CASE_A}", follow_redirects=False).status_code == 303


def test_https_answers_carry_hsts_and_plain_http_ones_do_not(app):
    """Review web15 L2: no Strict-Transport-Security at all, even behind TLS with secure cookies."""
    secure = TestClient(app, base_url="https://portal.example")  # no `with`: its lifespan would close the app
    for path in ("/login", "/healthz", "/static/app.js", "/api/v1/search"):
        assert secure.get(path).headers.get("strict-transport-security") == "max-age=31536000", path
    assert "strict-transport-security" not in TestClient(app).get("/login").headers  # RFC 6797: not over http


def test_account_changes_are_events_with_who_and_where(app, seeded):
    """Review web15 L3: disabling a user from /admin (or by the CLI) recorded nobody and no address."""
    digitize(seeded[0], "users", "add", "temp-scanner", "--role", "scanner", "--agency", "000.00.31.H56",
             "--password-stdin", stdin=PASSWORD + "\n")
    client, _ = login(app, name="admin", address="10.9.8.7")
    r = client.post("/admin/users/temp-scanner/disable", data={"csrf": csrf_of(client, "/admin")},
                    follow_redirects=False)
    assert r.status_code == 303
    digitize(seeded[0], "tokens", "create", "temp-token", "--role", "officer", "--agency", "000.00.31.H56")
    digitize(seeded[0], "tokens", "revoke", "temp-token")
    lines = digitize(seeded[0], "users", "events").splitlines()
    assert re.search(r"user:admin +user disabled +temp-scanner +10\.9\.8\.7$", lines[2]), lines
    assert re.search(r"cli:\S+ +token revoked +temp-token$", lines[0]) and "token created" in lines[1], lines
    assert any(re.search(r"cli:\S+ +user added +temp-scanner", line) for line in lines[3:]), lines


def test_security_headers_and_safe_download_names(app):
    client, _ = login(app)
    page = client.get(f"/cases/{CASE_A}")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-store"
    download = client.get(f"/cases/{CASE_A}/documents/1/original")
    assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+"', download.headers["content-disposition"])


def test_case_page_shows_the_dossier_and_its_access_log(app):
    client, _ = login(app)
    page = client.get(f"/cases/{CASE_A}").text
    assert "Nguyễn Văn An" in page and "/dossier.zip" in page and "user:officer-a" in page
    assert client.get(f"/cases/{CASE_B}").status_code == 404


def test_the_access_log_shows_client_addresses_to_archivists_and_admins_only(app):
    """Review web15 L9: every reader of a case saw the address of every actor (officers, one-stop tokens)."""
    officer, _ = login(app, address="198.51.100.23")
    assert "user:officer-a" in officer.get(f"/cases/{CASE_A}").text
    page = officer.get(f"/cases/{CASE_A}").text
    assert "user:officer-a" in page and "198.51.100.23" not in page  # actor and action, not where from
    admin, _ = login(app, name="admin", address="198.51.100.24")
    assert "198.51.100.23" in admin.get(f"/cases/{CASE_A}").text


def test_the_admin_page_shows_each_tokens_expiry(app):
    """Review web15 L7: tokens expire (the seeded ones: made by the CLI with its default 365 days)."""
    admin, _ = login(app, name="admin")
    page = admin.get("/admin").text
    expiries = re.findall(r'<td class="expires">([^<]*)</td>', page)
    assert expiries and all(re.fullmatch(r"20\d\d-\d\d-\d\d", e) for e in expiries), expiries


def test_search_page_highlights_and_pages(app):
    client, _ = login(app)
    page = client.get("/search", params={"q": "quyen su dung dat"}).text
    assert "<mark>" in page and CASE_A in page and CASE_B not in page
    assert "<mark><script>" not in client.get("/search", params={"q": "<script>"}).text


def test_a_case_id_in_the_search_box_opens_the_case_only_in_scope(app):
    client, _ = login(app)
    opened = client.get("/search", params={"q": CASE_A.lower()}, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == f"/cases/{CASE_A}"
    refused = client.get("/search", params={"q": CASE_B}, follow_redirects=False)
    assert refused.status_code == 200 and "Trần Thị Bình" not in refused.text


def test_english_switch_and_no_open_redirect(app):
    client, _ = login(app)
    assert client.get("/lang/en", params={"next": "//evil.example/"}, follow_redirects=False).headers[
        "location"] == "/"
    assert ">Search<" in client.get("/search").text
    client.get("/lang/vi")
    assert ">Tra cứu<" in client.get("/search").text
    _, r = login(app, next="https://evil.example/")
    assert r.headers["location"] == "/"


def test_an_internal_error_is_json_without_details(app, seeded, monkeypatch):
    from storage.access import Gate

    def broken(self, case_id):
        raise RuntimeError("secret internals /var/lib/digitize")

    monkeypatch.setattr(Gate, "case", broken)
    api = TestClient(app, raise_server_exceptions=False,
                     headers={"authorization": f"Bearer {seeded[1]['onestop-a']}"})
    r = api.get(f"/api/v1/cases/{CASE_A}")
    assert r.status_code == 500 and r.json()["error"] == "internal" and "secret" not in r.text


def test_case_page_and_api_show_each_documents_recorded_signature(app, seeded, tmp_path):
    from dataclasses import replace

    from portal_data import AGENCY_A, store_case
    from storage.archive import Archive

    signed_case = f"{AGENCY_A}-241020-0005"
    settings = Settings(data_dir=str(seeded[0]))
    with Archive.open(settings) as archive:
        real_store = archive.store

        def store_signed(original, pdfa, report, meta):
            if meta.title.startswith("Tài liệu 1"):
                report = replace(report, signature={
                    "field": "Signature1", "signer": "UBND Phường Bến Nghé", "cert_sha256": "ab" * 32,
                    "signing_time": "2024-10-15T09:30:00+07:00", "level": "B-T",
                    "timestamp": "2024-10-15T09:30:01+07:00"})
            return real_store(original, pdfa, report, meta)

        archive.store = store_signed
        store_case(archive, tmp_path, signed_case, ["Tờ trình ký số", "Phụ lục"], AGENCY_A)
    client, _ = login(app)
    page = client.get(f"/cases/{signed_case}").text
    assert "UBND Phường Bến Nghé, 2024-10-15 09:30 (PAdES B-T)" in page
    assert page.count("chưa ký") == 1  # the second document only
    api = TestClient(app, headers={"authorization": f"Bearer {seeded[1]['onestop-a']}"})
    docs = api.get(f"/api/v1/cases/{signed_case}").json()["documents"]
    assert [[(s["signer"], s["signing_time"], s["level"]) for s in d["signatures"]] for d in docs] == [
        [("UBND Phường Bến Nghé", "2024-10-15T09:30:00+07:00", "B-T")], []]


def test_logout_ends_the_session_server_side_so_a_copied_cookie_stops_working(app):
    client, _ = login(app)
    copied = dict(client.cookies)
    assert client.get(f"/cases/{CASE_A}", follow_redirects=False).status_code == 200
    thief = TestClient(app, cookies=copied)
    assert thief.get(f"/cases/{CASE_A}", follow_redirects=False).status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/search").text).group(1)
    assert client.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    r = thief.get(f"/cases/{CASE_A}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    again, _ = login(app)  # a new login is a new session
    assert again.get(f"/cases/{CASE_A}", follow_redirects=False).status_code == 200


def test_an_internal_error_still_carries_the_security_headers(seeded):
    """Starlette answers an unhandled exception outside the headers middleware: the handler adds them."""
    settings = Settings(data_dir=str(seeded[0]))
    broken = create_app(settings)

    def boom():
        raise RuntimeError("a bug")

    broken.add_api_route("/boom-test-only", boom)
    for path in ("/boom-test-only",):
        answer = TestClient(broken, raise_server_exceptions=False).get(path)
        assert answer.status_code == 500
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["cache-control"] == "no-store" and answer.headers["x-frame-options"] == "SAMEORIGIN"
        assert "a bug" not in answer.text


def desk_of(tmp_path, name="lan", agency=AGENCY_A):
    """A portal on its own data dir with one scanner and no upload yet: (settings, uploads folder, app)."""
    from storage import access
    from storage.archive import Archive

    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.secure_cookies = False
    with Archive.open(settings) as archive:
        access.add_user(archive.index, name, "scanner", [agency], PASSWORD)
        access.add_user(archive.index, "binh", "scanner", ["000.00.12.H29"], PASSWORD)
    return settings, tmp_path / "data" / "uploads", create_app(settings)


def test_a_failed_upload_can_be_dismissed_deleting_its_kept_scan(tmp_path, monkeypatch):
    """Review rev17desk M2: a failed upload nobody retries kept its scan (personal data) for ever.
    Review2 r2desk L1: any scanner of the agency deleted a colleague's kept scan (maybe the only copy) in one
    click, and the event was committed only after the deletion."""
    import json
    import uuid

    from storage import access
    from storage.archive import Archive
    from web.uploads import UploadQueue

    settings, uploads, app = desk_of(tmp_path)
    with Archive.open(settings) as archive:
        access.add_user(archive.index, "chi", "scanner", [AGENCY_A], PASSWORD)
    job = uuid.uuid4().hex
    folder = write_job(uploads, job, "user:lan", AGENCY_A, "failed", "2026-12-01T08:00:00.000+00:00",
                       case_id=CASE_A, reason="no pages")
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4 kept scan")
    other, _ = login(app, name="binh")
    csrf = csrf_of(other, "/desk")
    sure = {"csrf": csrf, "confirm": "yes"}
    assert other.post(f"/desk/jobs/{job}/dismiss", data=sure, follow_redirects=False).status_code == 404
    colleague, _ = login(app, name="chi")  # agency A too: sees the job (and may retry it), never deletes it
    sure = {"csrf": csrf_of(colleague, "/desk"), "confirm": "yes"}
    assert f"/desk/jobs/{job}/retry" in colleague.get("/desk").text
    assert colleague.post(f"/desk/jobs/{job}/dismiss", data=sure, follow_redirects=False).status_code == 403
    assert (folder / "scan.pdf").exists()
    client, _ = login(app, name="lan")
    csrf = csrf_of(client, "/desk")
    assert client.post(f"/desk/jobs/{job}/dismiss", data={"csrf": "forged", "confirm": "yes"}).status_code == 403
    assert client.post(f"/desk/jobs/{job}/dismiss", data={"csrf": csrf}).status_code == 400  # not confirmed
    assert (folder / "scan.pdf").exists()
    recorded_before: list[str] = []
    real = UploadQueue.dismiss

    def dismiss(self, job, by):  # the event is in the log before the scan goes
        with Archive.open(settings) as archive:
            recorded_before.extend(e.detail for e in archive.index.events(case_id=CASE_A) if "dismissed" in e.detail)
        return real(self, job, by)

    monkeypatch.setattr(UploadQueue, "dismiss", dismiss)
    sure = {"csrf": csrf, "confirm": "yes"}
    assert client.post(f"/desk/jobs/{job}/dismiss", data=sure, follow_redirects=False).status_code == 303
    assert recorded_before and job in recorded_before[0]
    assert not (folder / "scan.pdf").exists() and json.loads((folder / "job.json").read_text())["state"] == "dismissed"
    assert f"/desk/jobs/{job}/retry" not in client.get("/desk").text
    assert client.post(f"/desk/jobs/{job}/dismiss", data=sure).status_code == 400  # only a failed one
    with Archive.open(settings) as archive:
        events = [e for e in archive.index.events(case_id=CASE_A) if "dismiss" in e.detail]
    (event,) = events  # the repeat refused before anything was recorded
    assert event.actor == "user:lan" and event.outcome == "failure" and job in event.detail


def test_a_dismissal_that_fails_after_its_event_is_taken_back(tmp_path, monkeypatch):
    """Review2 r2desk L1: the event is committed before the scan is deleted; if the deletion then does not
    happen, a compensating event says so."""
    import uuid

    from storage.archive import Archive
    from web.uploads import UploadQueue

    settings, uploads, app = desk_of(tmp_path)
    job = uuid.uuid4().hex
    folder = write_job(uploads, job, "user:lan", AGENCY_A, "failed", "2026-12-01T08:00:00.000+00:00",
                       case_id=CASE_A, reason="no pages")
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4 kept scan")
    monkeypatch.setattr(UploadQueue, "_claim", lambda self, job_id: False)  # another process holds the job
    client, _ = login(app, name="lan")
    sure = {"csrf": csrf_of(client, "/desk"), "confirm": "yes"}
    assert client.post(f"/desk/jobs/{job}/dismiss", data=sure).status_code == 400
    assert (folder / "scan.pdf").exists()
    with Archive.open(settings) as archive:
        details = [e.detail for e in archive.index.events(case_id=CASE_A) if "dismissed" in e.detail]
    assert len(details) == 2 and "not dismissed after all: this upload is being processed" in details[-1] + details[0]


def test_an_old_failed_upload_stays_on_the_desk(tmp_path):
    """Review rev17desk M2: the failed list was cut from the 50 newest jobs, so 50 newer uploads (a
    colleague's too) hid a failed one for ever: never retried, its scan kept for ever."""
    import uuid

    from storage.index import now_iso

    settings, uploads, app = desk_of(tmp_path)
    old = uuid.uuid4().hex
    folder = write_job(uploads, old, "user:lan", AGENCY_A, "failed", "2026-01-01T08:00:00.000+00:00",
                       reason="no pages", finished_at="2026-01-01T08:01:00.000+00:00")
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4 kept scan")
    for n in range(50):  # finished today: not old enough to be pruned
        write_job(uploads, uuid.uuid4().hex, "user:lan", AGENCY_A, "done", f"2026-01-02T08:{n:02d}:00.000+00:00",
                  finished_at=now_iso())
    client, r = login(app, name="lan")
    assert r.status_code == 303
    desk = client.get("/desk").text
    assert f"/desk/jobs/{old}/retry" in desk
