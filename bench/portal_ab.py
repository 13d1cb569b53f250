"""Portal A/B on a busy machine (on demand, never in CI): two code trees served ALTERNATELY, ratios per round.

    .venv/bin/python bench/portal_ab.py --base /work/main [--rounds 2] [--requests 1500] [--clients 50]
                                        [--kind pdfa|case|search] [--docs 100000] [--backend sqlite|postgresql]

bench/portal_bench.py serves ``--base`` and this tree one after the other, so a change in the machine's
load between the two shows up as a difference between them. This serves them in turn, ``--rounds``
times (the order swapped each round), on one copy of portal_bench.py's cached data set (built
there, with the same ``DIGITIZE_BENCH_CACHE``), each round a closed loop of ``--requests`` requests of the
bench's mix (or of one ``--kind``) from ``--clients`` clients (``--backend postgresql``: on its PostgreSQL
set, restored into a server of its own), and prints the medians and the median of
the per-round ratios (this tree / base): the numbers to trust when other work shares the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from portal_bench import (AGENCY, KINDS, ROOT, Settings, access, cached_dataset, drive, errors, percentile, plan,
                          serve, working_copy)
from storage.archive import Archive
from tests.servers import start_postgres


def one_run(code: Path, settings: Settings, token: str, args, seed: int) -> dict:
    port = 18000 + random.randint(0, 999)
    process = serve(settings, port, Path(settings.data_dir).parent / "serve.log", code)
    try:
        drive(process, port, token, plan(args.docs, args.files, 300, args.kind, seed=1), 4, 300, 60)  # warm up
        run = drive(process, port, token, plan(args.docs, args.files, args.requests, args.kind, seed=seed),
                    args.clients, args.requests, 300)
    finally:
        process.terminate()
        process.wait(30)
    total = sum(len(s["latency_ms"]) for s in run.kinds.values())
    row = {"requests/s": total / run.wall, "server CPU ms / request": 1000 * run.server_cpu / max(total, 1),
           "errors": sum(errors(s) for s in run.kinds.values())}
    for kind in KINDS:
        values = run.kinds.get(kind, {}).get("latency_ms") or []
        if values:
            row[f"{kind} p50 ms"], row[f"{kind} p95 ms"] = percentile(values, 50), percentile(values, 95)
    return row


def add_run_arguments(parser: argparse.ArgumentParser, rounds: int = 2, requests: int = 1500) -> None:
    """The options of a run of trees served in turn (shared with bench/portal_phases.py)."""
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--kind", choices=KINDS, help="one request kind only (default: the bench's mix)")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--pdf-kb", type=int, default=500)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the index (postgresql: a server of its own on loopback, started and stopped here)")


def in_turn(trees: dict, args, run) -> dict[str, list[dict]]:
    """``run(name, settings, token, seed, tmp)`` for each tree, ``--rounds`` times, the order swapped each
    round, on one copy of portal_bench.py's cached data set (``--backend``): each tree's results, round by round."""
    args.rebuild = False
    results: dict[str, list[dict]] = {name: [] for name in trees}
    pg = start_postgres() if getattr(args, "backend", "sqlite") == "postgresql" else None
    with tempfile.TemporaryDirectory(prefix="digitize-portal-ab-") as tmp, contextlib.ExitStack() as stack:
        if pg is not None:
            stack.callback(pg.stop)
            settings = working_copy("postgresql", cached_dataset("postgresql", args, pg), Path(tmp), pg)
        else:
            shutil.copytree(cached_dataset("sqlite", args) / "data", Path(tmp) / "data", symlinks=True)
            settings = Settings(data_dir=str(Path(tmp) / "data"))
        with Archive.open(settings) as archive:
            token = access.create_token(archive.index, f"ab{random.randint(0, 10**6)}", "officer", [AGENCY])
        for r in range(args.rounds):
            for name in (list(trees) if r % 2 == 0 else list(reversed(trees))):
                results[name].append(run(name, settings, token, 2 + r, Path(tmp)))
                shown = {k: round(v, 1) for k, v in results[name][-1].items() if isinstance(k, str)}
                print(f"round {r + 1} {name}: {shown}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="the other code tree (e.g. a worktree of main)")
    add_run_arguments(parser)
    args = parser.parse_args()
    trees = {"base": args.base.resolve(), "this tree": ROOT}
    results = in_turn(trees, args, lambda name, settings, token, seed, _tmp: one_run(trees[name], settings, token,
                                                                                      args, seed))
    print(f"\n$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{args.rounds} rounds alternated, closed loop, {args.clients} clients, {args.requests} requests "
          f"({args.kind or 'mix'}), {args.docs:,} documents, {args.backend}; medians over rounds\n")
    print("| measure | base | this tree | this tree / base (median of per-round ratios) |\n|---|---|---|---|")
    for key in results["base"][0]:
        base = [x[key] for x in results["base"]]
        mine = [x.get(key, 0) for x in results["this tree"]]
        ratios = [b / a for a, b in zip(base, mine) if a]
        ratio = f"{statistics.median(ratios):.2f}" if ratios else ""
        print(f"| {key} | {statistics.median(base):.1f} | {statistics.median(mine):.1f} | {ratio} |")


if __name__ == "__main__":
    main()
