"""What recording the sidecar's SHA-256 at a take costs (review hard15 L6): CPU and wall per claims.take of a
200 KB scan + ~300-byte sidecar, with the hash and with it stubbed out, alternating in one run (so load on the
machine hits both alike). No fixtures to cache. Seconds to run:

    PYTHONPATH=. .venv/bin/python bench/take_bench.py 300
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path, PurePath

from watch_record_bench import cpu_seconds as cpu  # bench/ is this script's folder

from digitize.config import Settings
from pipelines import claims as claimslib
from pipelines import watch

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300


real = claimslib._sha256_at
tot = {"with hash": [0.0, 0.0], "without": [0.0, 0.0]}
with tempfile.TemporaryDirectory() as tmp:
    inbox = Path(tmp) / "inbox"; inbox.mkdir(mode=0o750)
    w = watch.Watcher(watch.WatchOptions(inbox, stable_seconds=0.0), Settings(data_dir=f"{tmp}/data"))
    try:
        for i in range(N):
            for mode in tot:
                (inbox / f"s{i}{mode[0]}.pdf").write_bytes(os.urandom(200_000))
                (inbox / f"s{i}{mode[0]}.pdf.json").write_text('{"case_id": "000.00.31.H56-241015-0027"}' * 7)
                claimslib._sha256_at = real if mode == "with hash" else (lambda *a, **k: "")
                c, t = cpu(), time.perf_counter()
                claim = w.claims.take(w.folders.inbox, PurePath(f"s{i}{mode[0]}.pdf"), f"s{i}{mode[0]}.pdf.json")
                tot[mode][0] += cpu() - c; tot[mode][1] += time.perf_counter() - t
                w.claims.drop(claim)
    finally:
        claimslib._sha256_at = real
        w.folders.close()
for mode, (c, t) in tot.items():
    print(f"{mode:10} CPU {1000*c/N:.3f} ms/take  wall {1000*t/N:.3f} ms/take")
print(f"CPU ratio {tot['with hash'][0]/tot['without'][0]:.3f}  wall ratio {tot['with hash'][1]/tot['without'][1]:.3f}")
print(f"command: PYTHONPATH=. .venv/bin/python bench/take_bench.py {N}")
