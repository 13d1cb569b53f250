"""Where a request's time goes in a saturated portal (on demand, never in CI): phases per request kind.

    .venv/bin/python bench/portal_phases.py [--base /path/to/other/tree] [--rounds 1] [--requests 3000]
                                            [--clients 50] [--kind pdfa|case|search]

Serves this tree (and ``--base``, alternating round by round, the order swapped each round) through
bench/portal_probe.py on one copy of bench/portal_bench.py's cached SQLite data set (the same
``DIGITIZE_BENCH_CACHE``; built there), drives a closed loop of the bench's mix with bench/loadgen, and
prints, per request kind, p50 / p95 of each phase of the server's time (see portal_probe.py: the wait for a
loop turn, the thread hop there and back, the route, the access events' commit and the loop's wake-up
after it, the body's hand-over and the socket draining it), the client's latency, the writer's commits
(duration, events per commit) and one loop turn's length. The probes cost CPU of their own: compare trees
within one run, not with bench/portal_bench.py's numbers.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import statistics
import sys
from pathlib import Path

from portal_ab import add_run_arguments, in_turn
from portal_bench import KINDS, ROOT, Settings, drive, percentile, plan, serve

PROBE = Path(__file__).with_name("portal_probe.py")
# (label, end stamp, start stamp): a phase is end - start, for requests that have both
PHASES = [
    ("loop turn before the app", "app", None),
    ("app to access dependency", "gate", "app"),
    ("dependency: archive waited for on the loop", "gloop", "gate"),
    ("dependency: hop wait for a thread + GIL", "gthread", "gate"),
    ("dependency: wait for an archive", "garch", "gthread"),
    ("dependency: hop back to the loop", "submit", "gready"),
    ("app to thread pool (all of the above)", "submit", "app"),
    ("hop: wait for a thread + GIL", "thread", "submit"),
    ("route in the thread", "ret", "thread"),
    ("hop back to the loop", "back", "ret"),
    ("after route, to commit wait", "cwait", "back"),
    ("commit (queued + writer)", "cdone", "cwait"),
    ("commit done to request resumed (loop turns)", "cback", "cdone"),
    ("to status line sent", "start", None),
    ("status line to last body write", "body", "start"),
    ("body buffered until drained", "drained", "body"),
    ("server total (parsed to drained)", "drained", "t0"),
]


def kind_of(path: str) -> str:
    if "/search" in path:
        return "search"
    return "pdfa" if path.endswith("/pdfa") else "case"


def one_run(code: Path, settings: Settings, token: str, args, seed: int, probe_dir: Path,
            env: dict | None = None) -> dict:
    shutil.rmtree(probe_dir, ignore_errors=True)
    probe_dir.mkdir(parents=True)
    port = 18000 + random.randint(0, 999)
    process = serve(settings, port, Path(settings.data_dir).parent / "serve.log", code, main=[str(PROBE)],
                    extra_env={"DIGITIZE_PROBE_DIR": str(probe_dir), **(env or {})})
    try:
        drive(process, port, token, plan(args.docs, args.files, 300, args.kind, seed=1), 4, 300, 60)  # warm up
        for f in probe_dir.glob("*.jsonl"):  # flushed every second: the warm-up's lines go (most of them)
            f.unlink()
        run = drive(process, port, token, plan(args.docs, args.files, args.requests, args.kind, seed=seed),
                    args.clients, args.requests, 300)
    finally:
        process.terminate()
        process.wait(30)
    records, commits, loop = [], [], []
    for f in probe_dir.glob("*.jsonl"):
        for line in f.read_text().splitlines():
            obj = json.loads(line)
            if "commit" in obj:
                commits.append(obj["commit"])
            elif "loop" in obj:
                loop.append(obj["loop"])
            elif "path" in obj and "/api/v1/" in obj["path"]:
                records.append(obj)
    out: dict = {"req/s": sum(len(s["latency_ms"]) for s in run.kinds.values()) / run.wall,
                 "server CPU ms/request": 1000 * run.server_cpu / max(1, sum(len(s["latency_ms"])
                                                                             for s in run.kinds.values()))}
    for kind in KINDS:
        mine = [r for r in records if kind_of(r["path"]) == kind]
        lat = run.kinds.get(kind, {}).get("latency_ms") or []
        if lat:
            out[(kind, "client latency")] = (percentile(lat, 50), percentile(lat, 95), len(lat))
        for label, end, start in PHASES:
            values = [r[end] - (r[start] if start and start != "t0" else 0) for r in mine
                      if end in r and (start is None or start == "t0" or start in r)]
            if values:
                out[(kind, label)] = (percentile(values, 50), percentile(values, 95), len(values))
        if mine:
            out[(kind, "share with no dependency hop (token cached, archive at hand) %")] = (
                100 * sum(1 for r in mine if "gthread" not in r) / len(mine), 0, len(mine))
        turns = [r["turns"] for r in mine if r.get("turns") is not None]
        if turns:
            out[(kind, "loop turns to drain the body")] = (percentile(turns, 50), percentile(turns, 95), len(turns))
            out[(kind, "share of bodies not taken at once")] = (
                100 * sum(1 for r in mine if r.get("buffered")) / max(1, len(mine)), 0, len(mine))
    if commits:
        durations = [1000 * (b - a) for a, b, _ in commits]
        sizes = [n for _, _, n in commits]
        out[("writer", "commit ms")] = (percentile(durations, 50), percentile(durations, 95), len(commits))
        out[("writer", "events per commit")] = (percentile(sizes, 50), percentile(sizes, 95), len(commits))
    if loop:
        out[("loop", "one loop turn ms (per-second p50 / p95, median)")] = (
            statistics.median(x[0] for x in loop), statistics.median(x[1] for x in loop), len(loop))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="another code tree, served in turn (e.g. a copy of main)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:VAR=VALUE[,VAR=VALUE]",
                        help="also serve this tree with these environment variables, e.g. '16 threads:"
                             "DIGITIZE_PROBE_THREADS=16' (also DIGITIZE_PROBE_POOL, DIGITIZE_PROBE_SWITCH, "
                             "DIGITIZE_WEB_WORKERS, DIGITIZE_WEB_SEARCH_LANE); repeatable")
    add_run_arguments(parser, rounds=1, requests=3000)
    args = parser.parse_args()
    trees = ({"base": args.base.resolve()} if args.base else {}) | {"this tree": ROOT}
    envs: dict[str, dict] = {name: {} for name in trees}
    for variant in args.variant:
        label, _, assignments = variant.partition(":")
        trees[label] = ROOT
        envs[label] = dict(a.split("=", 1) for a in assignments.split(",") if a)
    results = in_turn(trees, args, lambda name, settings, token, seed, tmp: one_run(
        trees[name], settings, token, args, seed, tmp / "probe", envs[name]))
    print(f"\n$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"closed loop, {args.clients} clients, {args.requests} requests ({args.kind or 'mix'}), "
          f"{args.rounds} round(s); ms, medians over rounds of each round's p50 / p95 (n: requests)\n")
    names = list(trees)
    print("| kind | phase | " + " | ".join(f"{n} p50 / p95 (n)" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for key in ("req/s", "server CPU ms/request"):
        print(f"| all | {key} | " + " | ".join(f"{statistics.median(x[key] for x in results[n]):.1f}"
                                               for n in names) + " |")
    keys = [k for k in results[names[-1]][0] if isinstance(k, tuple)]
    for key in keys:
        cells = []
        for n in names:
            rows = [x[key] for x in results[n] if key in x]
            cells.append(f"{statistics.median(r[0] for r in rows):.1f} / {statistics.median(r[1] for r in rows):.1f}"
                         f" ({int(statistics.median(r[2] for r in rows))})" if rows else "")
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
