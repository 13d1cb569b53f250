"""``digitize watch`` given decompression bombs: each is refused into failed/ with its reason, the
watcher stays up and stores the next file (issue 9, finding 5). Pages are decoded in page
workers only, so the watcher's own memory never holds a bomb."""

from __future__ import annotations

import resource
import subprocess
import zlib

import pikepdf
import pytest
from pipeline_support import ROOT, digitize_cmd, make_settings, settings_env, stored_rows
from scans import page, write_pdf

pytestmark = pytest.mark.integration

SAFETY_NET = 6 << 30  # address space of the watcher (and so its workers) in case the bombs were decoded


def content_bomb(page_obj: pikepdf.Page, pdf: pikepdf.Pdf, megabytes: int = 200) -> None:
    body = zlib.compressobj(9)
    unit = b"0 0 m 10 10 l S\n"
    data = b"".join(body.compress(unit * (1 << 20)) for _ in range(megabytes * 1_000_000 // (len(unit) << 20) + 1))
    page_obj.Contents = pikepdf.Stream(pdf, data + body.flush(), Filter=pikepdf.Name.FlateDecode)


def test_bombs_go_to_failed_and_the_watcher_stores_the_next_file(tmp_path):
    settings = make_settings(tmp_path / "data")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name, bomb_page in (("a-bomb.pdf", 0), ("b-stack-bomb.pdf", 1)):  # a stack is scanned for codes first
        path = write_pdf([page([f"Trang {n + 1}"]) for n in range(2)], inbox / name)
        with pikepdf.open(path, allow_overwriting_input=True) as pdf:
            content_bomb(pdf.pages[bomb_page], pdf)
            pdf.save(path)
    write_pdf([page(["Đơn đề nghị cấp giấy phép"])], inbox / "c-good.pdf")

    def safety_net() -> None:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        soft = SAFETY_NET if hard == resource.RLIM_INFINITY else min(SAFETY_NET, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    done = subprocess.run(digitize_cmd("watch", str(inbox), "--once"), env=settings_env(settings), cwd=ROOT,
                          capture_output=True, text=True, timeout=600, preexec_fn=safety_net)
    assert done.returncode == 0, done.stderr
    failed = sorted(p.name for p in (inbox / "failed").iterdir())
    assert failed == ["a-bomb.pdf", "a-bomb.pdf.error.txt", "b-stack-bomb.pdf", "b-stack-bomb.pdf.error.txt"]
    for name in ("a-bomb.pdf", "b-stack-bomb.pdf"):
        assert "decompression bomb" in (inbox / "failed" / f"{name}.error.txt").read_text(encoding="utf-8")
    assert (inbox / "done" / "c-good.pdf").exists()
    assert [r.source_name for r in stored_rows(settings)] == ["c-good.pdf"]
