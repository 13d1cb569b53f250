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


if __name__ == "__main__":
    main(sys.argv[1])
