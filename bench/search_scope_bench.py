"""CPU of an officer's search with every full-text pass limited to its agencies (review 11b H1) against the
0005 order (the newest probe and the relevance pass over all agencies), side by side in one process,
alternating per query on one copy of the 100 000-document portal bench index.

    PYTHONPATH=. .venv/bin/python bench/search_scope_bench.py [--queries 200] [--source PATH]

The index is copied once to ~/.cache/digitize-bench/search-scope/ (and migrated there); later runs reuse it.
Numbers are in-process CPU (time.process_time) per search_page call, so a loaded machine inflates both
columns alike: read the ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage_bench import QUERY_SEEDS, WORDS  # noqa: E402

from storage.index import RANK_CAP, Index, open_index  # noqa: E402

CACHE = Path(os.environ.get("DIGITIZE_BENCH_CACHE", Path.home() / ".cache" / "digitize-bench")) / "search-scope"
SOURCE = Path.home() / ".cache/digitize-bench/fts11/portal-100000/sqlite/data/index.sqlite3"


def ranked_ids_0005(self, query, exact, limit, agencies=None):
    """Index._ranked_ids as migration 0005 landed it: order and count decided over every agency."""
    newest = self._match_ids(query, exact, max(RANK_CAP + 1, limit), "newest")
    if len(newest) > RANK_CAP:
        return newest[:limit] if agencies is None else self._match_ids(query, exact, limit, "newest", agencies)
    if len(newest) < 2:
        return newest
    return self._match_ids(query, exact, limit, "relevance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=200, help="distinct random queries besides the seeds")
    parser.add_argument("--source", type=Path, default=SOURCE, help="a portal bench index.sqlite3 to copy once")
    args = parser.parse_args()
    target = CACHE / "index.sqlite3"
    if not target.exists():
        CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(args.source, f"{target}.part")
        os.replace(f"{target}.part", target)
    index = open_index(f"sqlite:///{target}")
    index.map_for_reads()
    agencies = [r[0] for r in index._execute("SELECT DISTINCT substr(case_id, 1, instr(case_id, '-') - 1) FROM documents WHERE case_id IS NOT NULL")]
    rng = random.Random(11)
    words = WORDS.split() if isinstance(WORDS, str) else list(WORDS)
    queries = QUERY_SEEDS + [" ".join(rng.sample(words, rng.randint(2, 3))) for _ in range(args.queries)]
    new_ranked = Index._ranked_ids
    cpu: dict[str, list[float]] = {"0005 (order over all agencies)": [], "0006 (every pass scoped)": []}
    for n, text in enumerate(queries):
        scope = (agencies[n % len(agencies)],)
        order = list(cpu) if n % 2 else list(reversed(cpu))
        for name in order:
            Index._ranked_ids = ranked_ids_0005 if name.startswith("0005") else new_ranked
            started = time.process_time()
            index.search_page(text, lambda row: row.case_id is not None and row.case_id.split("-")[0] in scope,
                              20, 0, scope)
            cpu[name].append((time.process_time() - started) * 1000)
    Index._ranked_ids = new_ranked
    print(f"officer searches of one agency ({len(queries)} queries, {len(agencies)} agencies), CPU ms per search\n")
    print("| variant | mean | median | p95 |\n|---|---|---|---|")
    for name, values in cpu.items():
        ordered = sorted(values)
        print(f"| {name} | {statistics.mean(values):.2f} | {statistics.median(values):.2f} | "
              f"{ordered[int(0.95 * (len(ordered) - 1))]:.2f} |")
    old, new = (statistics.mean(v) for v in cpu.values())
    print(f"\nratio new/old (mean): {new / old:.2f}")
    print(f"command: PYTHONPATH=. python bench/search_scope_bench.py --queries {args.queries}")


if __name__ == "__main__":
    main()
