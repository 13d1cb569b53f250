"""``digitize batch --dry-run`` validates a manifest and reports every bad row at once."""

from __future__ import annotations

import subprocess
import sys

from pipelines.manifest import read_manifest

HEADER = "path,case_id,procedure_code,title,organ_id,file_catalog,file_notation,maintenance,rights\n"


def _tree(tmp_path):
    src = tmp_path / "src"
    (src / "1998").mkdir(parents=True)
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        (src / "1998" / name).write_bytes(b"%PDF-1.4\n%%EOF\n")
    return src


def test_dry_run_lists_every_bad_row_with_its_line_and_converts_nothing(tmp_path):
    src = _tree(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text(HEADER
                        + "1998/a.pdf,000.00.31.H56-241015-0027,1.004616,Đơn,H56.32,1998,HS-01,Vĩnh viễn,\n"
                        + "1998/missing.pdf,000.00.31.H56-241015-0028,,,,,,,\n"
                        + "1998/b.pdf,000.00.31.H56-241345-0029,2.1,,,,,,\n"
                        + "1998/a.pdf,,,,,,,,\n"
                        + "1998/c.pdf,,,,H56.32,98x,,,\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "digitize.cli", "batch", str(src), "--manifest", str(manifest),
                           "--dry-run"], capture_output=True, text=True, env={"DIGITIZE_DATA_DIR": str(tmp_path / "d"),
                                                                              "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert any("line 3" in l and "not found" in l for l in lines)
    assert any("line 4" in l and "month 13" in l for l in lines)
    assert any("line 4" in l and "procedure code" in l for l in lines)
    assert any("line 5" in l and "listed twice" in l for l in lines)
    assert any("line 6" in l and "FileCatalog" in l for l in lines)
    assert lines[-1].startswith("digitize: manifest") and "5 problem" in lines[-1]
    assert not (tmp_path / "d").exists()  # nothing stored, not even an empty index


def test_good_manifest_maps_paths_to_clues_semicolon_csv_from_excel(tmp_path):
    src = _tree(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("\ufeffpath;case_id;title\n1998/a.pdf;000.00.31.H56-241015-0027;Đơn\n", encoding="utf-8")
    parsed = read_manifest(manifest, src)
    assert parsed.problems == []
    assert parsed.hint(src / "1998" / "a.pdf").values == {"case_id": "000.00.31.H56-241015-0027", "title": "Đơn",
                                                          "archive": {"Title": "Đơn"}}
    assert parsed.hint(src / "1998" / "b.pdf") is None


def test_unknown_column_is_reported_once_not_per_row(tmp_path):
    src = _tree(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,case_idd\n1998/a.pdf,x\n1998/b.pdf,y\n", encoding="utf-8")
    problems = [str(p) for p in read_manifest(manifest, src).problems]
    assert problems == ["line 1: unknown columns: case_idd"]


def test_a_manifest_saved_as_excel_unicode_text_is_read(tmp_path):
    """UTF-16 with its BOM and tabs (Excel's "Unicode Text") was refused as not UTF-8."""
    from pipelines.manifest import read_manifest

    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    file = tmp_path / "manifest.csv"
    file.write_bytes("path\tcase_id\r\na.pdf\t000.00.31.H56-241015-0027\r\n".encode("utf-16"))
    manifest = read_manifest(file, tmp_path)
    assert not manifest.problems, manifest.problems
    (clue,) = manifest.rows.values()
    assert clue.values["case_id"] == "000.00.31.H56-241015-0027"
