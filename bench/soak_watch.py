"""Soak test on demand (issue 10): ``digitize watch`` under faults for a long while, then account for every file.

Not a pytest test and never run in CI. For ``--minutes`` (30 by default) small generated scans arrive
continuously in the watcher's inbox while MinIO and PostgreSQL (started here, on loopback, in temp dirs)
are restarted at random intervals (a few seconds down) and the watcher is killed with SIGKILL about once a
minute and started again. The watcher's RSS, open fds and the ``digitize-*`` temp folders are sampled.
At the end feeding stops, the inbox drains, and the script checks: every file stored exactly once (index
rows by original SHA-256), ``digitize verify --all`` clean, nothing left in the inbox but files in failed/
with a reason, no temp folder of a live process left once the watcher is idle. It prints a table and
exits 1 if a check fails. (A watcher killed mid-job leaves its ``digitize-*`` folders; by design a later
sweep removes them once an hour untouched, digitize/fsutil.py, so in a run under an hour they add up to
about one or two a kill: reported, not failed.)

Kept light: one A6 page per file at 200 dpi, ``[convert] validate = false`` (no veraPDF), one job.

    PYTHONPATH=. .venv/bin/python bench/soak_watch.py --minutes 30
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "pipelines")]

from pipeline_support import digitize_cmd, make_settings, settings_env, stored_rows  # noqa: E402
from scans import page, write_pdf  # noqa: E402
from servers import minio_binary, pg_bin_dir, start_minio, start_postgres  # noqa: E402

CASE = "000.00.31.H56-241015-0027"
CONTROL = {"done", "failed", ".digitize"}
WARM_UP = 10.0  # seconds after a watcher's start before its RSS and fds are sampled


@dataclass
class Counts:
    fed: dict[str, str] = field(default_factory=dict)  # relative name -> SHA-256 of the bytes fed
    minio_restarts: int = 0
    pg_restarts: int = 0
    kills: int = 0
    crashes: list[int] = field(default_factory=list)  # exit codes of watchers that stopped on their own
    orphans: int = 0  # processes of a killed watcher's group still alive 5 s after the kill
    # t, watcher RSS kB, RSS kB of its process group (page workers too), fds, temp folders: all, of live processes
    samples: list[tuple[float, int, int, int, int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def group_members(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found


class Soak:
    def __init__(self, args: argparse.Namespace, base: Path):
        self.args, self.base = args, base
        self.counts = Counts()
        self.stop_chaos = threading.Event()
        self.inbox = base / "inbox"
        (self.inbox / CASE).mkdir(parents=True)
        self.staging = base / "staging"
        self.staging.mkdir()
        self.tmp = base / "tmp"
        for sub in ("tmp", "home", "run"):
            (base / sub).mkdir(mode=0o700)
        self.minio = start_minio(base / "minio")
        self.pg = start_postgres()
        self.settings = make_settings(base / "data", store_url=self.minio.url("soak"),
                                      dsn=self.pg.create_database("soak"))
        self.env = dict(settings_env(self.settings), HOME=str(base / "home"), TMPDIR=str(self.tmp),
                        XDG_RUNTIME_DIR=str(base / "run"))
        self.log = base / "watch.log"
        self.watcher: subprocess.Popen | None = None
        self.watcher_started = 0.0

    # -- the watcher -------------------------------------------------------------------------------
    def start_watcher(self) -> None:
        self.watcher = subprocess.Popen(digitize_cmd("watch", str(self.inbox), "--poll", "0.5", "--log-json"),
                                        env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                        stderr=open(self.log, "ab"), start_new_session=True)
        self.watcher_started = time.monotonic()

    def check_watcher(self) -> None:
        """A watcher that stopped without being killed is a finding: note its exit code, start another."""
        if self.watcher.poll() is not None:
            self.counts.crashes.append(self.watcher.returncode)
            self.start_watcher()

    def kill_watcher(self) -> None:
        pid = self.watcher.pid
        os.kill(pid, signal.SIGKILL)
        self.watcher.wait()
        self.counts.kills += 1
        time.sleep(5)
        left = group_members(pid)
        if left:
            self.counts.orphans += len(left)
            os.killpg(pid, signal.SIGKILL)
        self.start_watcher()

    def stop_watcher(self) -> None:
        if self.watcher and self.watcher.poll() is None:
            os.killpg(self.watcher.pid, signal.SIGTERM)
            try:
                self.watcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.watcher.pid, signal.SIGKILL)
                self.watcher.wait()

    # -- feeding and faults ------------------------------------------------------------------------
    def feed_one(self, n: int) -> None:
        name = f"{n:05d}-soak.pdf"
        staged = write_pdf([page([f"Tờ khai số {n}", f"Soak {time.time():.3f} {random.random():.6f}"])],
                           self.staging / name)
        self.counts.fed[f"{CASE}/{name}"] = hashlib.sha256(staged.read_bytes()).hexdigest()
        os.replace(staged, self.inbox / CASE / name)  # arrives whole, like a scanner writing elsewhere first

    def chaos(self, restart) -> None:
        """Restart one server at random intervals until told to stop."""
        while not self.stop_chaos.wait(random.uniform(self.args.restart_min, self.args.restart_max)):
            try:
                restart(random.uniform(self.args.down_min, self.args.down_max))
            except Exception as exc:  # noqa: BLE001 - a server that will not come back ends the soak as failed
                self.counts.errors.append(f"restart failed: {exc}")
                return

    def restart_minio(self, down: float) -> None:
        self.minio.stop()
        time.sleep(down)
        self.minio.start()  # same port and data dir
        self.counts.minio_restarts += 1

    def restart_pg(self, down: float) -> None:
        self.pg.restart(down_seconds=down)
        self.counts.pg_restarts += 1

    def sample(self, started: float) -> bool:
        """One sample, unless the watcher started under WARM_UP seconds ago (its start-up is not its size)."""
        if time.monotonic() - self.watcher_started < WARM_UP:
            return False
        pid = self.watcher.pid
        temps = [p.name for p in self.tmp.iterdir() if p.name.startswith("digitize-")]
        live = sum(1 for name in temps if Path(f"/proc/{name.split('-')[1]}").exists())
        group = sum(rss_kb(member) for member in group_members(pid))
        self.counts.samples.append((time.monotonic() - started, rss_kb(pid), group, fd_count(pid), len(temps), live))
        return True

    def pending(self) -> list[Path]:
        return [p for p in self.inbox.rglob("*") if p.is_file()
                and p.relative_to(self.inbox).parts[0] not in CONTROL]

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> None:
        args = self.args
        self.start_watcher()
        started = time.monotonic()
        end = started + args.minutes * 60
        threads = [threading.Thread(target=self.chaos, args=(f,), daemon=True)
                   for f in (self.restart_minio, self.restart_pg)]
        for t in threads:
            t.start()
        next_file = next_kill = next_sample = started
        next_kill += random.uniform(0.5, 1.5) * args.kill_every
        n = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_file:
                n += 1
                self.feed_one(n)
                next_file = now + args.every
            if now >= next_sample and self.sample(started):
                next_sample = now + args.sample_every
            self.check_watcher()
            if now >= next_kill:
                self.kill_watcher()
                next_kill = time.monotonic() + random.uniform(0.5, 1.5) * args.kill_every
            time.sleep(0.2)
        self.stop_chaos.set()
        for t in threads:
            t.join()
        print(f"fed {n} files in {args.minutes} min; draining the inbox ...", file=sys.stderr, flush=True)
        drain_end = time.monotonic() + args.drain_timeout
        while self.pending() and time.monotonic() < drain_end:
            self.check_watcher()
            time.sleep(1)
        time.sleep(max(3.0, WARM_UP - (time.monotonic() - self.watcher_started)))  # last move to done/
        self.sample(started)
        self.stop_watcher()

    def results(self) -> tuple[list[tuple[str, str]], bool]:
        c = self.counts
        rows = stored_rows(self.settings)
        by_sha: dict[str, int] = {}
        for r in rows:
            by_sha[r.original_sha256] = by_sha.get(r.original_sha256, 0) + 1
        failed_dir = self.inbox / "failed"
        failed = {str(p.relative_to(failed_dir)) for p in failed_dir.rglob("*")
                  if p.is_file() and not p.name.endswith(".error.txt")} if failed_dir.exists() else set()
        with_reason = {f for f in failed if (failed_dir / (f + ".error.txt")).is_file()}
        stored = sum(1 for sha in c.fed.values() if by_sha.get(sha, 0) >= 1)
        duplicates = sum(by_sha.get(sha, 0) - 1 for sha in c.fed.values() if by_sha.get(sha, 0) > 1)
        lost = [name for name, sha in c.fed.items() if sha not in by_sha and name not in with_reason]
        left = [str(p.relative_to(self.inbox)) for p in self.pending()]
        verify = subprocess.run(digitize_cmd("verify", "--all"), env=self.env, cwd=ROOT, capture_output=True,
                                text=True, timeout=1800)
        rss = [s[1] for s in c.samples if s[1]]
        tree = [s[2] for s in c.samples if s[2]]
        fds = [s[3] for s in c.samples if s[3]]
        temps = [s[4] for s in c.samples]
        live_at_end = c.samples[-1][5] if c.samples else 0
        mb = lambda kb: f"{kb / 1024:.0f} MB"  # noqa: E731
        table = [
            ("minutes fed", f"{self.args.minutes:g} (a file every {self.args.every:g} s)"),
            ("files fed", str(len(c.fed))),
            ("stored (index rows by SHA-256)", str(stored)),
            ("duplicates", str(duplicates)),
            ("failed/ with a reason", str(len(with_reason))),
            ("failed/ without a reason", str(len(failed - with_reason))),
            ("lost", str(len(lost))),
            ("left in the inbox", str(len(left))),
            ("verify --all", "clean" if verify.returncode == 0 else f"exit {verify.returncode}"),
            ("MinIO restarts", str(c.minio_restarts)),
            ("PostgreSQL restarts", str(c.pg_restarts)),
            ("watcher SIGKILLs", str(c.kills)),
            ("watcher exits on its own", ", ".join(map(str, c.crashes)) or "0"),
            ("orphans 5 s after a kill", str(c.orphans)),
            ("watcher RSS first / last / max", f"{mb(rss[0])} / {mb(rss[-1])} / {mb(max(rss))}" if rss else "—"),
            ("watcher + its workers RSS first / last / max",
             f"{mb(tree[0])} / {mb(tree[-1])} / {mb(max(tree))}" if tree else "—"),
            ("watcher fds first / last / max", f"{fds[0]} / {fds[-1]} / {max(fds)}" if fds else "—"),
            ("digitize-* temp folders first / last / max", f"{temps[0]} / {temps[-1]} / {max(temps)}" if temps else "—"),
            ("of them a live process's, at the end (idle)", str(live_at_end)),
            ("samples", str(len(c.samples))),
        ]
        ok = (stored + len(with_reason) == len(c.fed) and not duplicates and not lost and not left
              and not (failed - with_reason) and verify.returncode == 0 and not c.crashes and not c.errors
              and not c.orphans and not live_at_end)
        if verify.returncode != 0:
            c.errors.append("verify --all: " + (verify.stdout + verify.stderr).strip()[-500:])
        if live_at_end:
            c.errors.append(f"{live_at_end} temp folder(s) of a live process left with the watcher idle")
        for name in lost[:10]:
            c.errors.append(f"lost: {name}")
        for name in left[:10]:
            c.errors.append(f"left in the inbox: {name}")
        return table, ok

    def close(self) -> None:
        self.stop_chaos.set()
        self.stop_watcher()
        subprocess.run(digitize_cmd("servers", "stop"), env=self.env, cwd=ROOT, capture_output=True, timeout=120)
        self.minio.stop()
        self.pg.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long files keep arriving (default 30)")
    p.add_argument("--every", type=float, default=3.0, help="seconds between two arriving files (default 3)")
    p.add_argument("--kill-every", type=float, default=60.0, help="mean seconds between watcher SIGKILLs")
    p.add_argument("--restart-min", type=float, default=20.0, help="least seconds between restarts of a server")
    p.add_argument("--restart-max", type=float, default=90.0, help="most seconds between restarts of a server")
    p.add_argument("--down-min", type=float, default=2.0, help="least seconds a restarted server stays down")
    p.add_argument("--down-max", type=float, default=6.0, help="most seconds a restarted server stays down")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS/fd/temp samples")
    p.add_argument("--drain-timeout", type=float, default=600.0, help="most seconds to wait for the inbox to drain")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (inbox, logs) for a look afterwards")
    args = p.parse_args()
    if not minio_binary().is_file() or pg_bin_dir() is None:
        print("soak_watch: needs MinIO (DIGITIZE_MINIO_BIN) and PostgreSQL binaries; run scripts/setup.sh",
              file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="soak-watch-"))
    soak = Soak(args, base)
    try:
        soak.run()
        table, ok = soak.results()
    finally:
        soak.close()
    print("\ndigitize watch soak: one A6 page per file at 200 dpi, [convert] validate = false (no veraPDF), 1 job")
    print("\n| measure | value |\n|---|---|")
    for k, v in table:
        print(f"| {k} | {v} |")
    for e in soak.counts.errors:
        print(f"FAIL {e}")
    print(f"\n{'PASS' if ok else 'FAIL'} (watch log: {soak.log}{'' if args.keep else ', removed; --keep keeps it'})")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
