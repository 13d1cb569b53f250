"""A real browser (Debian's chromium, driven by Playwright) against a real `digitize serve`: an officer logs
in, searches without accents, opens a case, views a page, downloads the ZIP and checks its hashes, and is
refused another agency's case; a scanner uploads a scan and sees it stored.

Screenshots go to $DIGITIZE_SCREENSHOTS (the README's come from `DIGITIZE_SCREENSHOTS=docs/screenshots`),
else to the test's temp folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from digitize.config import Settings
from portal_data import CASE_A, CASE_B, PASSWORD
from storage.archive import Archive

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "01_clean.png"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("DIGITIZE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def images_loaded(page, selector: str, timeout: float = 30.0) -> None:
    """Wait until every matching image has pixels (polled from Python: the CSP forbids eval'd waits)."""
    deadline = time.monotonic() + timeout
    check = "imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"
    while not page.locator(selector).evaluate_all(check):
        assert time.monotonic() < deadline, f"images {selector} did not load"
        time.sleep(0.2)


def login(browser, portal, name: str, shots: Path | None = None):
    context = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True, locale="vi-VN")
    page = context.new_page()
    page.goto(portal.url + "/")
    assert "/login" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    if shots:
        page.screenshot(path=str(shots / "login.png"))
    page.click("button.primary")
    page.wait_for_load_state()
    return context, page


def test_officer_searches_views_downloads_and_is_refused_another_agency(browser, portal, shots, tmp_path):
    context, page = login(browser, portal, "officer-a", shots)
    page.fill("input[name=q]", "quyen su dung dat")
    page.click("form.search button.primary")
    page.wait_for_selector("ol.hits li")
    assert page.locator("ol.hits mark").count() > 0
    assert page.locator(f"a.case-link:text-is('{CASE_B}')").count() == 0
    page.screenshot(path=str(shots / "search.png"))

    page.click(f"a.case-link:text-is('{CASE_A}')")
    page.wait_for_selector("table.docs")
    assert "Nguyễn Văn An" in page.inner_text("main")
    images_loaded(page, "img.thumb")
    page.screenshot(path=str(shots / "case.png"), full_page=True)

    page.click("td.actions a >> nth=0")  # view the first document
    images_loaded(page, "#page-image")
    page.screenshot(path=str(shots / "viewer.png"))

    page.goto(f"{portal.url}/cases/{CASE_A}")
    with page.expect_download() as download:
        page.click("#download-zip")
    target = tmp_path / "dossier.zip"
    download.value.save_as(target)
    with Archive.open(Settings(data_dir=str(portal.data_dir))) as archive:
        expected = [d.pdfa_sha256 for d in archive.documents(CASE_A)]
    with zipfile.ZipFile(target) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        files = [entry["file"] for entry in manifest["documents"]]
        assert [hashlib.sha256(zf.read(f)).hexdigest() for f in files] == expected

    response = page.goto(f"{portal.url}/cases/{CASE_B}")
    assert response.status == 404
    assert "Trần Thị Bình" not in page.content()
    context.close()


def test_scanner_uploads_a_scan_and_sees_it_stored(browser, portal, shots):
    context, page = login(browser, portal, "scanner-a")
    assert page.url.endswith("/desk")
    page.fill("#upload-case", CASE_A)
    page.set_input_files("#upload-files", str(SAMPLE))
    page.wait_for_selector("#upload-progress li[data-state=done]", timeout=300_000)
    page.reload()
    page.screenshot(path=str(shots / "desk.png"), full_page=True)
    with Archive.open(Settings(data_dir=str(portal.data_dir))) as archive:
        stored = [d for d in archive.documents(CASE_A)
                  if d.original_sha256 == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()]
    assert len(stored) == 1 and stored[0].scanned_by == "scanner-a"
    context.close()
