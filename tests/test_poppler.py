"""The poppler wrapper's bookkeeping (real pdftoppm)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from digitize import poppler


def test_version_is_asked_once_per_installed_binary(monkeypatch):
    poppler._versions.clear()
    first = poppler.version()
    assert first.startswith("pdftoppm version")
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or subprocess.CompletedProcess(
        a, 0, "", "pdftoppm version 99.0\n"))
    assert poppler.version() == first and calls == []  # cached
    poppler._versions.clear()  # as after an upgrade (another mtime): asked again
    assert poppler.version() == "pdftoppm version 99.0" and len(calls) == 1
    poppler._versions.clear()


def test_version_without_poppler_is_empty(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert poppler.version() == ""


SECRETS = {"AWS_SECRET_ACCESS_KEY": "leaked-aws-key", "AWS_SESSION_TOKEN": "leaked-token", "PGPASSWORD": "leaked-pg"}


def _fake_tools(folder, log):
    """pdftoppm, pdfinfo and pdftotext that write their environment to LOG and fail."""
    for tool in ("pdftoppm", "pdfinfo", "pdftotext"):
        exe = folder / tool
        exe.write_text(f"#!/bin/sh\necho \"== {tool}\" >> '{log}'\nenv >> '{log}'\nexit 1\n")
        exe.chmod(0o755)


def test_poppler_tools_get_no_secret_variable(tmp_path, monkeypatch):
    """pdftoppm/pdfinfo parse attacker-supplied PDFs: neither AWS_* nor PGPASSWORD may reach them
    (pdf2image gave them the whole environment; review rev16ipc M2)."""
    from pathlib import Path

    from digitize.errors import InputError

    (tmp_path / "bin").mkdir()
    log = tmp_path / "env.txt"
    _fake_tools(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DIGITIZE_IPC16_PLAIN", "kept")
    pdf = tmp_path / "x.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    try:
        poppler.render_page(Path(pdf), 0, 100)
    except InputError:
        pass
    assert poppler.page_words(Path(pdf), 0, 100) is None  # failed: OCR the page instead
    poppler._versions.clear()
    poppler.version()
    poppler._versions.clear()
    seen = log.read_text()
    assert "== pdftoppm" in seen and "== pdftotext" in seen
    assert "DIGITIZE_IPC16_PLAIN=kept" in seen  # the rest of the environment is there
    for name, value in SECRETS.items():
        assert value not in seen, name


def test_render_page_renders_the_page_asked_in_colour_and_grey(tmp_path):
    from PIL import Image

    from digitize.errors import InputError

    pdf = tmp_path / "two.pdf"
    first = Image.new("RGB", (300, 200), (200, 10, 10))
    first.save(pdf, resolution=100, save_all=True, append_images=[Image.new("RGB", (100, 100), (10, 10, 200))])
    colour = poppler.render_page(pdf, 1, 100)
    assert colour.mode == "RGB" and colour.size == (100, 100) and colour.getpixel((50, 50))[2] > 150
    grey = poppler.render_page(pdf, 0, 100, grey=True)
    assert grey.mode == "L" and grey.size == (300, 200)
    with pytest.raises(InputError, match="page 3 cannot be rendered"):
        poppler.render_page(pdf, 2, 100)


def test_poppler_tools_carry_their_own_cpu_limit(tmp_path, monkeypatch):
    """The wall-clock timeout lives in the page worker: a tool it leaves behind when it is killed
    still stops after TIMEOUT CPU seconds (review rev17input H1)."""
    from pathlib import Path

    from digitize.errors import InputError

    log = tmp_path / "limits.txt"
    (tmp_path / "bin").mkdir()
    for tool in ("pdftoppm", "pdftotext"):
        exe = tmp_path / "bin" / tool
        exe.write_text(f"#!/bin/sh\nulimit -t >> '{log}'\nexit 1\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr(poppler, "TIMEOUT", 7)
    with pytest.raises(InputError):
        poppler.render_page(Path(tmp_path / "x.pdf"), 0, 100)
    poppler.page_words(Path(tmp_path / "x.pdf"), 0, 100)
    assert log.read_text().split() == ["7", "7"]


def test_a_lower_hard_cpu_limit_is_kept_not_raised(tmp_path, monkeypatch):
    """A unit's LimitCPU= or a clerk's `ulimit -t` below TIMEOUT: the tool still runs, under the soft
    limit the hard one allows (review2 r2input M1: `ulimit -t 300` over a hard 100 failed every page)."""
    import resource

    out = tmp_path / "limits.txt"
    script = (f"import resource; from digitize import poppler; r = poppler._run(['/bin/sh', '-c', 'ulimit -S -t; ulimit -H -t']);"
              f"open({str(out)!r}, 'wb').write(r.stdout + r.stderr)")
    hard = 100
    subprocess.run([sys.executable, "-c", script], check=True,
                   preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CPU, (hard, hard)))
    assert out.read_text().split() == ["100", "100"]


def control_character_pdf(path):
    """A born-digital page whose font maps the glyph B to U+0001 (a broken ToUnicode map)."""
    import pikepdf

    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /X def "
            b"1 begincodespacerange <00> <FF> endcodespacerange 2 beginbfchar <41> <0041> <42> <0001> "
            b"endbfchar endcmap CMapName currentdict /CMap defineresource pop end end")
    font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica,
                              ToUnicode=pikepdf.Stream(pdf, cmap))
    page = pdf.pages[0]
    page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
    page.Contents = pdf.make_stream(b"BT /F1 24 Tf 100 700 Td (Hello AB world) Tj ET")
    pdf.save(path)
    return path


def test_a_control_character_does_not_empty_a_pages_text_layer(tmp_path, monkeypatch):
    """pdftotext writes U+0001 into its XHTML as is, which made it unparsable: the whole page was
    stored with no text, as born-digital at 100 % (review rev17input M4)."""
    from digitize.sources import open_source

    pdf = control_character_pdf(tmp_path / "ctl.pdf")
    words = [w.text for _, w in poppler.page_words(pdf, 0, 300)]
    assert "Hello" in words and "world" in words
    assert all(c.isprintable() for word in words for c in word)
    monkeypatch.setattr(poppler, "parse_bbox_layout", lambda xhtml, scale: None)  # output still unparsable
    page = open_source(pdf).page(0)
    assert page.words is None and any("OCRed instead" in warning for warning in page.warnings)


def test_text_extraction_past_its_timeout_makes_the_page_ocred_not_an_internal_error(tmp_path, monkeypatch):
    """TimeoutExpired escaped page_words: exit 15 and three watcher retries (review rev17input L1)."""
    pdf = control_character_pdf(tmp_path / "ctl.pdf")
    monkeypatch.setattr(poppler, "TIMEOUT", 0.001)
    assert poppler.page_words(pdf, 0, 300) is None
