"""Stores one document in a separate process, for the kill -9 tests: ``python store_job.py JOB.json``.

Settings come from DIGITIZE_* environment variables, exactly as in production.
"""

import json
import sys
from pathlib import Path

from digitize.config import load_settings
from digitize.records import DocumentReport
from storage.archive import Archive, DocumentMeta


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    with Archive.open(load_settings()) as archive:
        result = archive.store(Path(job["original"]), Path(job["pdfa"]), DocumentReport.from_dict(job["report"]),
                               DocumentMeta(**job["meta"]), actor="store-job")
    print(json.dumps({"doc_id": result.doc_id}), flush=True)


def start_paused(settings, doc, tmp_path: Path, fault: str = "objects-written"):
    """A store of ``doc`` in a child process, stopped at fault point ``fault`` (storage/faults.py): the
    caller kills it (its stdout's first line is read here, so it is there when this returns)."""
    import dataclasses
    import subprocess

    from settings_env import settings_env
    from storage.faults import ENV

    job = tmp_path / "job.json"
    job.write_text(json.dumps({"original": str(doc.original), "pdfa": str(doc.pdfa), "report": doc.report.to_dict(),
                               "meta": dataclasses.asdict(doc.meta)}), encoding="utf-8")
    child = subprocess.Popen([sys.executable, __file__, str(job)], env={**settings_env(settings), ENV: fault},
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if line.strip() != f"FAULT-PAUSE {fault}":
        child.kill()
        child.wait()
        raise AssertionError(child.stderr.read() if not line else line)
    return child


if __name__ == "__main__":
    main(sys.argv[1])
