"""veraPDF report parsing, on XML in the shape veraPDF 1.28 prints with ``--format xml`` (no JVM run)."""

from __future__ import annotations

import shlex
import sys
import textwrap
from pathlib import Path

import pytest

from digitize import verapdf
from digitize.errors import DigitizeError, MissingDependencyError, OutputValidationError

BUILD = """<?xml version="1.0" encoding="utf-8"?>
<report>
  <buildInformation>
    <releaseDetails id="core" version="1.28.2" buildDate="2025-07-15T16:07:00Z"></releaseDetails>
    <releaseDetails id="validation-model" version="1.28.2" buildDate="2025-07-15T16:12:00Z"></releaseDetails>
  </buildInformation>
  <jobs>
"""
END = """  </jobs>
  <batchSummary totalJobs="3" failedToParse="1" encrypted="0" outOfMemory="0" veraExceptions="0">
    <validationReports compliant="1" nonCompliant="1" failedJobs="1">3</validationReports>
    <featureReports failedJobs="0">0</featureReports>
    <repairReports failedJobs="0">0</repairReports>
    <duration start="1795558679053" finish="1795558679152">00:00:00.099</duration>
  </batchSummary>
</report>
"""


def job(name: str, size: int, body: str) -> str:
    """One <job> as veraPDF writes it: the file, then its validationReport or taskException."""
    return (f'    <job>\n      <item size="{size}">\n        <name>{name}</name>\n      </item>\n{body}'
            '      <duration start="1795558679064" finish="1795558679124">00:00:00.060</duration>\n    </job>\n')


def validation(compliant: bool, details: str) -> str:
    verdict = "compliant" if compliant else "not compliant"
    return (f'      <validationReport jobEndStatus="normal" profileName="PDF/A-2B validation profile"\n'
            f'          statement="PDF file is {verdict} with Validation Profile requirements." '
            f'isCompliant="{str(compliant).lower()}">\n{details}      </validationReport>\n')


COMPLIANT = job("/data/out/hồ sơ 01.pdf", 35052, validation(True, """\
        <details passedRules="144" failedRules="0" passedChecks="516" failedChecks="0"></details>
"""))
NON_COMPLIANT = job("/tmp/plain.pdf", 537, validation(False, """\
        <details passedRules="142" failedRules="2" passedChecks="61" failedChecks="4">
          <rule specification="ISO 19005-2:2011" clause="6.6.2.1" testNumber="1" status="failed" failedChecks="1">
            <description>The Catalog dictionary of a conforming file shall contain the Metadata key
              whose value is a metadata stream</description>
            <object>PDDocument</object>
            <test>containsMetadata == true</test>
            <check status="failed">
              <context>root/document[0]</context>
              <errorMessage>The document catalog dictionary doesn't contain metadata key</errorMessage>
            </check>
          </rule>
          <rule specification="ISO 19005-2:2011" clause="6.2.11.4.1" testNumber="1" status="failed" failedChecks="3">
            <description>The font programs for all fonts used for rendering within a conforming file shall be
              embedded</description>
            <object>PDFont</object>
            <test>fontFile_size == 1</test>
          </rule>
          <rule specification="ISO 19005-2:2011" clause="6.1.2" testNumber="1" status="passed" passedChecks="1">
            <description>The file header shall begin at byte zero</description>
          </rule>
        </details>
"""))
NOT_A_PDF = job("/tmp/junk.pdf", 10, """\
      <taskException type="PARSE" isExecuted="true" isSuccess="false">
        <duration start="1795558679138" finish="1795558679148">00:00:00.010</duration>
        <exceptionMessage>Exception: Couldn't parse stream caused by exception: End of file is reached</exceptionMessage>
      </taskException>
""")


def report(*jobs: str) -> bytes:
    return (BUILD + "".join(jobs) + END).encode("utf-8")


def test_one_result_per_job_in_order():
    results = verapdf.parse_report(report(COMPLIANT, NON_COMPLIANT, NOT_A_PDF))
    assert [(r.path, r.compliant) for r in results] == [
        ("/data/out/hồ sơ 01.pdf", True), ("/tmp/plain.pdf", False), ("/tmp/junk.pdf", False)]


def test_compliant_job_has_no_failures():
    (r,) = verapdf.parse_report(report(COMPLIANT))
    assert r.compliant and r.failures == []


def test_failed_rules_listed_with_clause_test_and_check_count_passed_rules_not():
    (r,) = verapdf.parse_report(report(NON_COMPLIANT))
    assert not r.compliant
    assert len(r.failures) == 2
    assert r.failures[0].startswith("6.6.2.1-1: The Catalog dictionary")
    assert r.failures[0].endswith("(1 checks)")
    assert r.failures[1].startswith("6.2.11.4.1-1: The font programs") and r.failures[1].endswith("(3 checks)")
    assert not any("header" in f for f in r.failures)


def test_unparseable_file_is_a_failure_with_veraPDFs_reason():
    (r,) = verapdf.parse_report(report(NOT_A_PDF))
    assert not r.compliant and r.failures == ["Exception: Couldn't parse stream caused by exception: End of file is reached"]


def test_job_with_neither_report_nor_reason():
    (r,) = verapdf.parse_report(report("<job><item><name>x.pdf</name></item></job>"))
    assert (r.path, r.compliant, r.failures) == ("x.pdf", False, ["veraPDF could not parse the file"])


def test_empty_batch():
    assert verapdf.parse_report(report()) == []


def fake_verapdf(monkeypatch, tmp_path, script: str) -> None:
    """Point DIGITIZE_VERAPDF at a small Python script standing in for veraPDF."""
    path = tmp_path / "fake_verapdf.py"
    path.write_text(textwrap.dedent(script), encoding="utf-8")
    monkeypatch.setenv("DIGITIZE_VERAPDF", f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}")


def test_validate_and_require_valid_through_a_fake_validator(monkeypatch, tmp_path):
    (tmp_path / "report.xml").write_bytes(report(NON_COMPLIANT))
    fake_verapdf(monkeypatch, tmp_path, f"""
        import sys
        assert sys.argv[1:6] == ["--nonpdfext", "--flavour", "2b", "--format", "xml"], sys.argv
        sys.stdout.buffer.write(open({str(tmp_path / "report.xml")!r}, "rb").read())
        sys.exit(1)
    """)
    (r,) = verapdf.validate([tmp_path / "a.pdf"])
    assert r.path == "/tmp/plain.pdf" and not r.compliant
    with pytest.raises(OutputValidationError, match="6.6.2.1-1"):
        verapdf.require_valid(tmp_path / "a.pdf")


def test_no_report_at_all_is_an_output_validation_error(monkeypatch, tmp_path):
    fake_verapdf(monkeypatch, tmp_path, "import sys; sys.stderr.write('java.lang.OutOfMemoryError'); sys.exit(1)")
    with pytest.raises(OutputValidationError, match="OutOfMemoryError"):
        verapdf.validate([tmp_path / "a.pdf"])


def test_missing_validator_is_a_missing_dependency(monkeypatch):
    monkeypatch.delenv("DIGITIZE_VERAPDF", raising=False)
    monkeypatch.setattr(verapdf, "command", lambda: None)
    with pytest.raises(MissingDependencyError):
        verapdf.validate(["a.pdf"])


@pytest.mark.parametrize("cut", [400, -30])  # a JVM killed mid-report (out of memory, signal)
def test_truncated_report_is_a_digitize_error(cut):
    xml = report(COMPLIANT, NON_COMPLIANT)[:cut]
    with pytest.raises(DigitizeError):
        verapdf.parse_report(xml)


def test_validator_timeout_is_a_digitize_error(monkeypatch, tmp_path):
    fake_verapdf(monkeypatch, tmp_path, "import time; time.sleep(30)")
    with pytest.raises(DigitizeError):
        verapdf.validate([tmp_path / "a.pdf"], timeout=0.5)


def test_validator_command_not_found_is_a_missing_dependency(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITIZE_VERAPDF", str(tmp_path / "no-such-verapdf"))
    with pytest.raises(MissingDependencyError):
        verapdf.validate([tmp_path / "a.pdf"])


def test_class_archive_is_renewed_when_a_jar_is_rebuilt(tmp_path):
    """A stale class-data archive makes the JVM print a warning before READY: never reuse one."""
    jar = tmp_path / "validator.jar"
    jar.write_bytes(b"v1")
    first = verapdf._cds_archive(str(jar))
    assert verapdf._cds_archive(str(jar)) == first
    jar.write_bytes(b"v2 rebuilt")
    assert verapdf._cds_archive(str(jar)) != first


def test_dumping_a_new_class_archive_drops_unused_old_ones(tmp_path):
    """Each rebuilt veraPDF left a ~14 MB archive behind; unused ones go when a new one is made."""
    import os
    import time

    def made(name: str, days: float) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x")
        then = time.time() - days * 86400
        os.utime(path, (then, then))
        return path

    old, recent = made("verapdf-old.jsa", 30), made("verapdf-recent.jsa", 2)
    dead_dump, live_dump = made("verapdf-old.123.tmp", 3), made("verapdf-new.server-9.tmp", 0)
    other = made("digitize-validator.jar", 30)
    flags, dump = verapdf._archive_flags(tmp_path / "verapdf-new.jsa", "42")
    assert flags == [f"-XX:ArchiveClassesAtExit={dump}"] and dump == tmp_path / "verapdf-new.42.tmp"
    assert not old.exists() and not dead_dump.exists()
    assert recent.exists() and live_dump.exists() and other.exists()
