#!/usr/bin/env python3
"""Signing benchmark (on demand, not in CI): signatures per minute and the share of a page's time it adds.

1. Signatures/min: one Signer per key (opened once, as in a worker), signing the same one-page PDF/A
   N times (PAdES B-B, visible mark), with a PKCS#12 (RSA-2048) and with a SoftHSM2 token
   (RSA-2048 through python-pkcs11), the two keys taking turns in blocks; with the CPU time per
   signature (all threads: the load-independent figure) and what a fresh worker (forked after
   signing.preload) pays once: opening the key, its first and second signature. A fresh self-signed
   certificate and token are made in a temp dir.
2. Share of a page's time: ``convert_file`` on a generated A4 page at 300 dpi (Vietnamese text), with
   no signer, with the PKCS#12 and with the token, alternating, R rounds each: the signature's time
   over the signed run's total (veraPDF checks once either way: the signed file, when signing). The
   first round of each (imports, font subset, validator start) is not counted.
3. A batch's wall time (the issue's target): the same N generated one-page A4 scans (300 dpi,
   distinct text, cached under ~/.cache/digitize-bench/sign) through ``digitize batch --jobs 2``
   into a fresh embedded archive, unsigned vs PKCS#12 vs SoftHSM2 after one uncounted warm-up: each
   round runs every signed variant next to an unsigned run of its own (A B B A across rounds), and the
   added share is the median over rounds of signed / unsigned - 1 of each pair, with its spread. The
   added CPU per document is split by part: the signature (the batch's signer thread), the key's
   opening (once per batch), the worker's hand-off, page 1's band for the mark, the worker's side of
   the veraPDF checks, the resident veraPDF JVM (its own CPU, read from /proc), and the rest.
   One-page documents are the worst case: signing is once per document.
5. The batch signer's key opening (``--only opening``): in a fresh process that has imported what
   ``digitize batch`` imports before its signer starts, the CPU of opening the key as the batch's
   SigningService does (pyHanko imported, key opened and checked, the mark's font made ready), of the
   first signature and of each one after, this tree and --baseline taking turns; and what the
   opening imports, by top-level package (``python -X importtime``, self times summed). Seconds.

    .venv/bin/python bench/sign_bench.py                  # ~6-10 min on 2 idle cores; tables on stdout
    .venv/bin/python bench/sign_bench.py --signatures 50 --rounds 5
    .venv/bin/python bench/sign_bench.py --only page --signatures 60 --rounds 1   # ~2 min: per-signature CPU
    .venv/bin/python bench/sign_bench.py --only batch --batch-files 24 --batch-rounds 5 --no-starts
    .venv/bin/python bench/sign_bench.py --only batch --batch-files 6 --batch-rounds 1 --no-starts \
        --keys SoftHSM2 --py-spy /tmp/spy       # py-spy stacks of every process of each batch
    mkdir /tmp/digitize-main && git archive main | tar -x -C /tmp/digitize-main   # a tree to compare against
    .venv/bin/python bench/sign_bench.py --only batch --batch-files 24 --batch-rounds 5 --no-starts \
        --keys SoftHSM2 --base /tmp/digitize-main   # this tree and main side by side, the same rounds
    .venv/bin/python bench/sign_bench.py --only batch --batch-files 6 --batch-rounds 3 --no-starts \
        --baseline /work/wt/sign12-base            # this tree and main side by side, the same rounds
    .venv/bin/python bench/sign_bench.py --only batch --keys SoftHSM2 --sign-delay 0.5 --no-starts \
        --baseline /work/wt/sign12-base            # a slow token (0.5 s per signature, simulated)
    .venv/bin/python bench/sign_bench.py --only opening --rounds 5 --signatures 20 --base /tmp/digitize-main
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = Path(os.environ.get("SIGN_BENCH_CODE") or ROOT)  # the digitize tree measured (a --baseline's, in a child)
sys.path.insert(0, str(CODE))
sys.path.insert(0, str(ROOT / "tests"))

PIN = "123456"
CACHE = Path(os.environ.get("DIGITIZE_BENCH_CACHE", Path.home() / ".cache" / "digitize-bench")) / "sign"


def make_key(folder: Path):
    """A self-signed RSA-2048 signing certificate: key PEM, PKCS#12 and certificate DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from pki import self_signed

    p12, cert_pem, key = self_signed(folder, "Nguyễn Thị Lan", PIN, rsa_bits=2048)
    pem = folder / "key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    der = folder / "cert.der"
    der.write_bytes(x509.load_pem_x509_certificate(cert_pem.read_bytes()).public_bytes(serialization.Encoding.DER))
    return pem, p12, der


def make_token(folder: Path, pem: Path, der: Path) -> tuple[str, Path]:
    from pki import softhsm_module

    conf = folder / "softhsm2.conf"
    (folder / "tokens").mkdir()
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    module = softhsm_module()
    for args in (["softhsm2-util", "--init-token", "--free", "--label", "bench", "--so-pin", "00" + PIN, "--pin", PIN],
                 ["softhsm2-util", "--import", str(pem), "--token", "bench", "--label", "signer", "--id", "01",
                  "--pin", PIN],
                 ["pkcs11-tool", "--module", module, "--token-label", "bench", "--login", "--pin", PIN,
                  "--write-object", str(der), "--type", "cert", "--label", "signer", "--id", "01"]):
        subprocess.run(args, check=True, capture_output=True, env=env)
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return module, conf


def make_page(folder: Path) -> Path:
    from PIL import Image

    from pages import render_text_page

    path = folder / "page.png"
    Image.fromarray(render_text_page(size=(2480, 3508), font_px=80, margin=180)).save(path, dpi=(300, 300))
    return path


def batch_pages(count: int) -> Path:
    """COUNT one-page A4 scans at 300 dpi with distinct text (distinct documents), made once and cached."""
    from PIL import Image

    from pages import VIETNAMESE_LINES, render_text_page

    folder = CACHE / f"pages-{count}"
    if folder.is_dir() and len(list(folder.glob("*.png"))) == count:
        return folder
    building = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    for i in range(count):
        turn = i % len(VIETNAMESE_LINES)
        lines = [f"Hồ sơ số {i + 1:04d}", *VIETNAMESE_LINES[turn:], *VIETNAMESE_LINES[:turn]]
        Image.fromarray(render_text_page(lines, size=(2480, 3508), font_px=80, margin=180)).save(
            building / f"scan-{i + 1:03d}.png", dpi=(300, 300))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(building, folder)
    return folder


# `digitize batch` noting the batch process's CPU time when it makes its worker pool (what runs before
# any file starts), where the CPU goes by part (each process appends "part seconds" lines to
# SIGN_BENCH_PARTS: the signature in the batch's signer thread, the worker's hand-off to it, the
# worker's veraPDF checks (client side: the JVM is counted apart), page 1's band for the mark, and the
# batch process's own CPU at its exit), and with a delay a slow USB token, in the benchmark only:
# every signature first sleeps (the core is free meanwhile). Parts a tree does not have are skipped.
PROBED_BATCH = """import atexit, importlib.abc, importlib.util, os, sys, time
def after_import(name, patch):
    # patch module NAME once it is imported, without importing it here: the batch imports the
    # conversion code itself, after its key process is forked (a probe importing it first would
    # hide that window)
    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            run = spec.loader.exec_module
            def exec_module(module):
                run(module)
                patch(module)
            spec.loader.exec_module = exec_module
            return spec
    sys.meta_path.insert(0, Hook())
def probe_batch(batch):
    _new_pool = batch._Runner._new_pool
    def new_pool(self):
        if not os.path.exists(os.environ["SIGN_BENCH_PROBE"]):
            with open(os.environ["SIGN_BENCH_PROBE"], "w") as probe:
                probe.write(str(time.process_time()))
            note("workers forked at", time.monotonic())
        return _new_pool(self)
    batch._Runner._new_pool = new_pool
after_import("pipelines.batch", probe_batch)
def note(part, seconds):
    fd = os.open(os.environ["SIGN_BENCH_PARTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{{part}} {{seconds:.6f}}\\n".encode())
    finally:
        os.close(fd)
def timed(owner, name, part, clock):
    inner = getattr(owner, name, None)
    if inner is None:
        return
    def wrapper(*args, **kwargs):
        t = clock()
        try:
            return inner(*args, **kwargs)
        finally:
            note(part, clock() - t)
    setattr(owner, name, wrapper)
from digitize import signing, signmark
after_import("digitize.convert", lambda convert: timed(convert, "_validate", "veraPDF client", time.process_time))
timed(signing.Signer, "sign", "signature", time.thread_time)  # the batch's signer thread
if hasattr(signing, "_open_key"):  # once per batch: in the key process (or the signer's thread without one)
    timed(signing, "_open_key", "key opened", time.thread_time)
    _open_key = signing._open_key
    _opening = []
    def open_key(*args, **kwargs):  # when, to tell the share of it the workers' fork found done
        note("key opened from", time.monotonic())
        _opening.append(1)
        try:
            return _open_key(*args, **kwargs)
        finally:
            _opening.pop()
            note("key opened to", time.monotonic())
    signing._open_key = open_key
if hasattr(signing, "_warm_key"):  # the key process's imports and font, at its fork (the key: when asked)
    _warm_key = signing._warm_key
    def warm_key(*args, **kwargs):  # counted once, as part of "key opened"; inside _open_key it is there
        if _opening or getattr(warm_key, "done", False):
            return _warm_key(*args, **kwargs)
        warm_key.done, started, t = True, time.monotonic(), time.thread_time()
        try:
            return _warm_key(*args, **kwargs)
        finally:
            note("key opened", time.thread_time() - t)
            note("key warmed from", started)
            note("key warmed to", time.monotonic())
    signing._warm_key = warm_key
    timed(signing, "_key_process_main", "key process", time.process_time)  # all of its CPU
    _fork_keys = signing.KeyProcess.__init__
    def fork_keys(self, *args, **kwargs):  # the batch process's CPU so far: its window is what follows
        note("batch CPU at the key's fork", time.process_time())
        return _fork_keys(self, *args, **kwargs)
    signing.KeyProcess.__init__ = fork_keys
else:
    timed(getattr(signing, "SigningService", None), "_open", "key opened", time.thread_time)
timed(signing.RemoteSigner, "sign", "hand-off", time.process_time)  # a worker: one thread
if hasattr(getattr(signing, "SigningService", None), "_begin_opening"):  # how long signatures waited for the key
    _service_sign = signing.SigningService.sign
    def service_sign(self, *args, **kwargs):  # as sign does first (asks for the key, waits): timed, then the rest
        self._begin_opening()
        t = time.monotonic()
        self.ready.wait(self.timeout)
        note("signatures' wait for the key", time.monotonic() - t)
        return _service_sign(self, *args, **kwargs)
    signing.SigningService.sign = service_sign
timed(signmark, "top_band_grey", "mark band", time.process_time)  # in the page worker
_me = os.getpid()  # forked children inherit the hook: only the batch process notes its own CPU
atexit.register(lambda: os.getpid() == _me and note("batch process", time.process_time()))
if {delay}:
    _sign = signing.Signer.sign
    def sign(self, *args, **kwargs):
        time.sleep({delay})
        return _sign(self, *args, **kwargs)
    signing.Signer.sign = sign
from digitize.launcher import main
sys.argv[0] = "digitize"
sys.exit(main())
"""



@dataclass
class BatchRun:
    """One batch's measures; ``parts``: CPU seconds by part (PROBED_BATCH), the validator's JVM included."""

    wall: float
    cpu: float  # the batch's processes: batch, workers, page workers (not the resident servers)
    before_fork: float  # the batch process's CPU before its workers were forked
    parts: dict[str, float] = field(default_factory=dict)


def server_cpu(run: Path) -> dict[str, float]:
    """CPU seconds so far of each resident server (the veraPDF JVM, all its threads) in the folder RUN."""
    from digitize import resident

    found: dict[str, float] = {}
    for server in resident.servers(run):
        try:
            fields = Path(f"/proc/{server.pid}/stat").read_text().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue
        ticks = os.sysconf("SC_CLK_TCK")
        found[server.kind] = found.get(server.kind, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return found


def batch_run(src: Path, work: Path, label: str, key_env: dict[str, str], jobs: int,
              code: Path = ROOT, delay: float = 0.0, waiters: int = -1, spy: Path | None = None) -> BatchRun:
    """One ``digitize batch`` into a fresh archive: its wall time, the CPU time of its processes
    (batch, workers, page workers: all waited for; not the resident veraPDF server, counted apart in
    ``parts``), the batch process's CPU time before its workers were forked (nothing converts before:
    the load-independent measure of a batch's start), and the CPU by part. On a shared machine the CPU
    times are the steadier. With ``spy``, py-spy records every process of the batch (raw collapsed
    stacks, for flamegraph.pl or a grep) into that file.
    Checks every file was stored, and signed exactly when a key is configured."""
    data, report, parts_file = work / "data", work / "report.json", work / "parts"
    shutil.rmtree(data, ignore_errors=True)
    parts_file.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITIZE_")}
    env.update(DIGITIZE_CONFIG="/dev/null", DIGITIZE_DATA_DIR=str(data), DIGITIZE_CONVERT_LANGUAGE="vie",
               DIGITIZE_VALIDATOR_DIR=str(work / "run"), PYTHONPATH=str(code), SIGN_BENCH_PARTS=str(parts_file),
               **key_env)
    if waiters >= 0 and code == ROOT:  # this tree's [batch] sign_waiters (main has no such setting)
        env["DIGITIZE_BATCH_SIGN_WAITERS"] = str(waiters)
    servers_before = server_cpu(work / "run")
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    probe = work / "probe"
    probe.unlink(missing_ok=True)
    env["SIGN_BENCH_PROBE"] = str(probe)
    script = work / "probed_batch.py"  # a file, not -c: py-spy names each process by its command line
    script.write_text(PROBED_BATCH.format(delay=delay if key_env else 0))
    command = [str(script)]
    spying = [shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record", "--subprocesses",
              "--nonblocking", "--format", "raw", "--rate", "200", "-o", str(spy), "--"] if spy else []
    # the script's folder comes first on sys.path, then PYTHONPATH (the tree measured); cwd = that tree too,
    # as `python -c` and -m would put the current folder first (a baseline must not import this tree)
    done = subprocess.run([*spying, sys.executable, *command, "batch", str(src), "--jobs", str(jobs),
                           "--report", str(report)], env=env, capture_output=True, text=True, cwd=code)
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    summary = json.loads(report.read_text())["summary"] if report.is_file() else {}
    if done.returncode != 0 or summary.get("failed", 1):
        raise SystemExit(f"batch ({label}) failed: {done.stderr.strip().splitlines()[-3:]}")
    stored = [p for p in data.rglob("*") if p.is_file() and p.read_bytes()[:5] == b"%PDF-"]
    signed = sum(b"/ByteRange" in p.read_bytes() for p in stored)
    if len(stored) != summary["files"] or signed != (len(stored) if key_env else 0):
        raise SystemExit(f"batch ({label}): {len(stored)} PDFs stored for {summary['files']} files, {signed} signed")
    parts: dict[str, float] = {}
    for line in parts_file.read_text().splitlines() if parts_file.is_file() else ():
        name, _, value = line.rpartition(" ")
        parts[name] = parts.get(name, 0.0) + float(value)
    for kind, total in server_cpu(work / "run").items():
        parts[f"{kind} server"] = total - servers_before.get(kind, 0.0)  # a server started by this batch: all of it
    if spy:  # py-spy's own sampling is in the children's CPU: not comparable then
        cpu = float("nan")
    return BatchRun(seconds, cpu, float(probe.read_text()) if probe.is_file() else float("nan"), parts)


def batch_order(names: list[str], round_no: int) -> list[tuple[str, str]]:
    """The runs of one round: every signed variant next to an unsigned run of its own, unsigned first in
    even rounds and second in odd ones (A B B A), so that a machine getting busier or quieter weighs on
    both sides of each pair alike. Returns (variant, pair name) in order."""
    runs: list[tuple[str, str]] = []
    signed = names[1:]
    turn = round_no % max(1, len(signed))
    for name in signed[turn:] + signed[:turn]:
        pair = [("unsigned", name), (name, name)]
        runs += pair if round_no % 2 == 0 else pair[::-1]
    return runs


PARTS = ("signature", "hand-off", "mark band", "veraPDF client", "key opened", "validator server")


def batch_share(keys: dict[str, dict[str, str]], files: int, rounds: int, jobs: int, tmp: Path,
                baseline: Path | None = None, delay: float = 0.0, starts_too: bool = True,
                waiters: int = -1, spy: Path | None = None) -> None:
    from digitize import resident

    src = batch_pages(files)
    codes = {name: ROOT for name in ("unsigned", *keys)}
    if baseline is not None:  # the same keys through the baseline's code, in the same rounds
        keys = {**keys, **{f"{name} (baseline)": env for name, env in keys.items()}}
        codes.update({name: baseline for name in keys if name.endswith("(baseline)")})
    variants = {"unsigned": {}, **keys}
    # runs[name]: the variant's runs; pairs[name]: (unsigned run, signed run) of the same round, side by side
    runs: dict[str, list[BatchRun]] = {v: [] for v in variants}
    pairs: dict[str, list[tuple[BatchRun, BatchRun]]] = {v: [] for v in keys}
    starts: dict[str, list[float]] = {v: [] for v in variants}  # CPU of a batch of no files: start-up
    empty = tmp / "empty"
    empty.mkdir()
    if spy:
        spy.mkdir(parents=True, exist_ok=True)
    try:
        for code in dict.fromkeys(codes.values()):  # validator start, font cache, disk cache
            batch_run(src, tmp, "warm-up", next(iter(keys.values())), jobs, code)
        for round_no in range(rounds):
            waiting: dict[str, BatchRun] = {}
            for name, pair in batch_order(list(variants), round_no):
                flame = spy / f"{name.replace('#', '').replace(' ', '-')}-{round_no + 1}-{len(runs[name])}.txt" \
                    if spy else None
                try:
                    run = batch_run(src, tmp, name, variants[name], jobs, codes[name], delay, waiters, flame)
                except SystemExit as failed:  # e.g. main's per-worker SoftHSM2 sessions: once UserPinNotInitialized
                    print(f"round {round_no + 1}: {failed}; run again", file=sys.stderr)
                    run = batch_run(src, tmp, name, variants[name], jobs, codes[name], delay, waiters, flame)
                runs[name].append(run)
                if pair in waiting:
                    other = waiting.pop(pair)
                    pairs[pair].append((other, run) if name == pair else (run, other))
                else:
                    waiting[pair] = run
            if starts_too:
                for name in variants:
                    starts[name].append(batch_run(empty, tmp, name, variants[name], jobs, codes[name]).cpu)
    finally:
        resident.stop_servers(tmp / "run")  # the validator this benchmark started, and only it
    base = statistics.median(r.wall for r in runs["unsigned"])
    slow = f", every signature delayed {delay} s (a slow token, simulated)" if delay else ""
    print(f"\nbatch: {files} one-page A4 scans (300 dpi, vie), digitize batch --jobs {jobs}, {rounds} rounds{slow}, "
          f"1-minute load average at the end {os.getloadavg()[0]:.2f}\n")
    print("| batch | wall s (median) | pages/min | CPU s (median) | added wall time: median (spread) | "
          "added CPU time: median (spread) | batch CPU s before workers fork | key opening done before workers fork "
          "| key opened, CPU s / the batch's CPU s from the key's fork to the workers' "
          "| signatures' wait for the key, s (wall) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| unsigned | {base:.1f} | {files / base * 60:.1f} | {statistics.median(r.cpu for r in runs['unsigned']):.1f} "
          f"| - | - | {statistics.median(r.before_fork for r in runs['unsigned']):.2f} | - | - | - |")
    for name in keys:
        wall = statistics.median(r.wall for r in runs[name])
        early = [e for e in (_opened_early(r) for r in runs[name]) if e is not None]
        print(f"| {name} | {wall:.1f} | {files / wall * 60:.1f} | {statistics.median(r.cpu for r in runs[name]):.1f} | "
              f"{_added([s.wall for _, s in pairs[name]], [u.wall for u, _ in pairs[name]])} | "
              f"{_added([s.cpu for _, s in pairs[name]], [u.cpu for u, _ in pairs[name]])} | "
              f"{statistics.median(r.before_fork for r in runs[name]):.2f} | "
              + (f"{statistics.median(early) * 100:.0f} % ({', '.join(f'{e * 100:.0f}' for e in early)})" if early else "-")
              + " | " + _window(runs[name]) + " | " + _key_wait(runs[name]) + " |")
    print("\nadded = median over rounds of signed / unsigned - 1, each signed run against the unsigned run next to it "
          "(A B B A); spread = lowest..highest round, the rounds in brackets")
    print("\nWhere the added CPU goes, ms per document (median over the pairs of signed - unsigned, / documents):\n")
    names = [*PARTS, "workers, other", "batch process, other", "all (batch + validator)"]
    print("| batch | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    plain = [statistics.median(_part(u, part) / files * 1000 for u in runs["unsigned"]) for part in names]
    print("| unsigned (ms per document, not added) | " + " | ".join(f"{c:.1f}" for c in plain) + " |")
    for name in keys:
        cells = [statistics.median((_part(s, part) - _part(u, part)) / files * 1000 for u, s in pairs[name])
                 for part in names]
        print(f"| {name} | " + " | ".join(f"{c:+.1f}" for c in cells) + " |")
    print("\nsignature: the batch's signer thread (thread CPU); hand-off: the worker's side of it (request, answer); "
          "mark band: page 1's band in the page worker; key opened: once per batch, in the key process forked at the batch's start (main: the signer's thread; imports, key, checks), shared by its documents (this tree: its imports and font at the fork, the key itself once the batch's signer asks, i.e. the batch has files to sign); veraPDF client: the worker's side of the checks; validator "
          "server: the resident veraPDF JVM (all threads); workers, other: conversion and storing; batch process, "
          "other: its start, the signer's socket threads, the batch's bookkeeping")
    if not starts_too:
        return
    print("\nStart-up (a batch of no files: imports, key opened once, preflight) and per document (the rest / N):\n")
    print("| batch | CPU s at start | CPU s per document | signing's CPU per document | "
          "projected added CPU, 100 documents | 1000 documents |")
    print("|---|---|---|---|---|---|")
    start0 = statistics.median(starts["unsigned"])
    doc0 = statistics.median([(r.cpu - st) / files for r, st in zip(runs["unsigned"], starts["unsigned"])])
    print(f"| unsigned | {start0:.2f} | {doc0:.2f} | - | - | - |")
    for name in keys:
        start = statistics.median(starts[name])
        doc = statistics.median([(r.cpu - st) / files for r, st in zip(runs[name], starts[name])])
        projected = [((start - start0) + (doc - doc0) * n) / (start0 + doc0 * n) * 100 for n in (100, 1000)]
        print(f"| {name} | {start:.2f} | {doc:.2f} | {(doc - doc0) * 1000:+.0f} ms ({(doc - doc0) / doc0 * 100:+.1f} %) "
              f"| {projected[0]:+.1f} % | {projected[1]:+.1f} % |")


def _opened_early(run: BatchRun) -> float | None:
    """The share of the key's opening (wall time, key process) that was over when the workers forked:
    that share ran while the batch process imported the conversion code, on a core otherwise idle."""
    p = run.parts
    spans = [(p.get(f"{what} from"), p.get(f"{what} to")) for what in ("key warmed", "key opened")]
    spans = [(start, end) for start, end in spans if start is not None and end is not None and end > start]
    fork = p.get("workers forked at")
    if not spans or fork is None:
        return None
    return sum(min(end, max(start, fork)) - start for start, end in spans) / sum(end - start for start, end in spans)


def _window(runs: list[BatchRun]) -> str:
    """The key's opening (CPU s, key process) against the CPU the batch process spends between forking
    the key process and forking its workers: with a second core idle meanwhile (nothing else converts
    yet), an opening no longer than that window is off the batch's critical path. Load-independent."""
    pairs = [(r.parts["key opened"], r.before_fork - r.parts["batch CPU at the key's fork"]) for r in runs
             if "key opened" in r.parts and "batch CPU at the key's fork" in r.parts and r.before_fork == r.before_fork]
    if not pairs:
        return "-"
    return (f"{statistics.median(p[0] for p in pairs):.2f} / {statistics.median(p[1] for p in pairs):.2f} "
            f"({', '.join(f'{a:.2f}/{b:.2f}' for a, b in pairs)})")


def _key_wait(runs: list[BatchRun]) -> str:
    """How long the batch's signatures waited, all told, for the key's opening (wall seconds, the batch
    process): the first file's worker waits for the login when it is asked only at its signature."""
    waits = [r.parts["signatures' wait for the key"] for r in runs if "signatures' wait for the key" in r.parts]
    if not waits:
        return "-"
    return f"{statistics.median(waits):.3f} ({', '.join(f'{w:.3f}' for w in waits)})"


def _part(run: BatchRun, part: str) -> float:
    """CPU seconds of one part of a run (see batch_share's table)."""
    p = run.parts
    if part == "workers, other":  # the key process (a batch's child, its CPU in run.cpu) is not a worker
        return run.cpu - p.get("batch process", 0.0) - p.get("key process", 0.0) - sum(p.get(k, 0.0) for k in PARTS[1:4])
    if part == "batch process, other":
        return p.get("batch process", 0.0) + p.get("key process", 0.0) - p.get("signature", 0.0) - p.get("key opened", 0.0)
    if part == "all (batch + validator)":
        return run.cpu + p.get("validator server", 0.0)
    return p.get(part, 0.0)


def _added(signed: list[float], plain: list[float]) -> str:
    ratios = [s / p - 1 for s, p in zip(signed, plain)]
    if not ratios:
        return "-"
    return (f"{statistics.median(ratios) * 100:+.1f} % ({min(ratios) * 100:+.0f}..{max(ratios) * 100:+.0f}: "
            f"{', '.join(f'{r * 100:+.0f}' for r in ratios)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signatures", type=int, default=30, help="signatures per key for the rate")
    parser.add_argument("--rounds", type=int, default=3, help="page conversions per variant (after a warm-up)")
    parser.add_argument("--only", choices=("page", "batch", "signatures", "opening"),
                        help="run one part: page (1 and 2), batch (3), signatures (4: CPU per signature, "
                             "this tree against --baseline) or opening (5: the batch signer's key opening "
                             "by phase and by imported package, against --baseline if given)")
    parser.add_argument("--baseline", "--base", type=Path, help="another digitize tree (git archive main | tar -x "
                        "-C DIR) measured side by side in the same rounds: batch (3) and signatures (4)")
    parser.add_argument("--child", nargs=3, metavar=("KEY", "DIR", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--opening-child", nargs=3, metavar=("KEY", "DIR", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--batch-files", type=int, default=8, help="one-page scans in the batch")
    parser.add_argument("--batch-rounds", type=int, default=5,
                        help="batch rounds (after a warm-up): each signed variant against an unsigned run of its own")
    parser.add_argument("--jobs", type=int, default=2, help="batch workers")
    parser.add_argument("--keys", default="PKCS#12,SoftHSM2", help="batch (3): the keys measured, comma-separated")
    parser.add_argument("--sign-delay", type=float, default=0.0,
                        help="batch (3): sleep this many seconds before every signature (a slow USB token, simulated)")
    parser.add_argument("--sign-waiters", type=int, default=-1,
                        help="batch (3): this tree's [batch] sign_waiters (extra workers when signing)")
    parser.add_argument("--no-starts", action="store_true",
                        help="batch (3): skip the batches of no files (start-up CPU); halves the runs")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="batch (3): record each batch with py-spy (all its processes, raw stacks) into DIR; "
                             "CPU totals are then not measured")
    args = parser.parse_args()
    if args.child:
        return signatures_child(*args.child)
    if args.opening_child:
        return opening_child(*args.opening_child)
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))

    with tempfile.TemporaryDirectory(prefix="sign-bench-") as tmp_name:
        tmp = Path(tmp_name)
        pem, p12, der = make_key(tmp)
        module, conf = make_token(tmp, pem, der)
        if args.only in (None, "page"):
            page_share(tmp, p12, module, args.signatures, args.rounds)
        if args.only == "signatures" or (args.only is None and args.baseline):
            signatures_side_by_side(tmp, args.baseline, args.signatures, args.rounds)
        if args.only == "opening":
            opening_side_by_side(tmp, args.baseline, args.signatures, args.rounds)
        if args.only in (None, "batch"):
            keys = {"PKCS#12": {"DIGITIZE_SIGN_PKCS12": str(p12), "DIGITIZE_SIGN_PIN": PIN},
                    "SoftHSM2": {"DIGITIZE_SIGN_PKCS11_MODULE": module, "DIGITIZE_SIGN_TOKEN_LABEL": "bench",
                                 "DIGITIZE_SIGN_KEY_LABEL": "signer", "DIGITIZE_SIGN_PIN": PIN,
                                 "SOFTHSM2_CONF": str(conf)}}
            keys = {name: env for name, env in keys.items() if name in args.keys.split(",")}
            batch_share(keys, args.batch_files, args.batch_rounds, args.jobs, tmp, args.baseline, args.sign_delay,
                        not args.no_starts, args.sign_waiters, args.py_spy)


def page_share(tmp: Path, p12: Path, module: str, signatures: int, rounds: int) -> None:
    from digitize import resident, signing
    from digitize.config import SignSettings
    from digitize.convert import ConvertOptions, convert_file

    os.environ["DIGITIZE_VALIDATOR_DIR"] = str(tmp / "run")
    keys = {
        "PKCS#12": SignSettings(pkcs12=str(p12), pin=PIN),
        "SoftHSM2": SignSettings(pkcs11_module=module, token_label="bench", key_label="signer", pin=PIN),
    }
    page = make_page(tmp)
    opts = ConvertOptions(language="vie", jobs=1)
    plain = tmp / "plain.pdf"
    convert_file(page, plain, opts)
    # before any key is opened here: a PKCS#11 library initialised before a fork is unusable in the child
    starts = {name: worker_start(cfg, plain, tmp) for name, cfg in keys.items()}
    signers = {name: signing.Signer(cfg, cfg.pin) for name, cfg in keys.items()}
    try:
        walls: dict[str, float] = {name: 0.0 for name in signers}
        cpus: dict[str, float] = {name: 0.0 for name in signers}
        for signer in signers.values():
            signer.sign(plain, tmp / "warm.pdf")
        blocks = max(1, min(5, signatures))  # the keys take turns: a busy spell hits both alike
        for block in range(blocks):
            for name, signer in signers.items():
                t, c = time.perf_counter(), time.process_time()  # CPU of all threads (the token signs in one)
                for _ in range(signatures // blocks + (block < signatures % blocks)):
                    signer.sign(plain, tmp / "signed.pdf")
                walls[name] += time.perf_counter() - t
                cpus[name] += time.process_time() - c
        rates = {name: signatures / walls[name] * 60 for name in signers}
        cpu_ms = {name: cpus[name] / signatures * 1000 for name in signers}

        variants = {"unsigned": None, **signers}
        totals: dict[str, list[float]] = {v: [] for v in variants}
        adds: dict[str, list[float]] = {v: [] for v in variants}
        checks: dict[str, list[float]] = {v: [] for v in variants}
        for round_no in range(rounds + 1):
            for name, signer in variants.items():
                doc = convert_file(page, tmp / f"out-{round_no}.pdf", opts, signer=signer)
                if round_no == 0:
                    continue  # warm-up
                totals[name].append(doc.timings["total"])
                adds[name].append(doc.timings.get("sign", 0.0))
                checks[name].append(doc.timings.get("validate", 0.0))
    finally:
        for signer in signers.values():
            signer.close()
        resident.stop_servers(tmp / "run")

    base = statistics.median(totals["unsigned"])
    load = os.getloadavg()[0]
    print(f"\n1-minute load average at the end: {load:.2f} (2 cores; other jobs were running)\n")
    check_base = statistics.median(checks["unsigned"])
    print("| key | signatures/min (one open signer) | CPU ms per signature | fresh worker: CPU ms to open the key "
          "/ 1st signature / 2nd | page s, unsigned | page s, signed | signing s | "
          "veraPDF s (unsigned / signed file) | share of page time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in signers:
        total, added = statistics.median(totals[name]), statistics.median(adds[name])
        opened, first, second = starts[name]
        print(f"| {name} | {rates[name]:.0f} | {cpu_ms[name]:.0f} | {opened:.0f} / {first:.0f} / {second:.0f} | "
              f"{base:.2f} | {total:.2f} | {added:.3f} | "
              f"{check_base:.2f} / {statistics.median(checks[name]):.2f} | {added / total * 100:.1f} % |")
    print("\nCPU ms per signature: process CPU time (all threads) over the signatures/min loop, the keys taking "
          "turns in blocks. Fresh worker: "
          "a process forked after signing.preload, as a batch worker is, opening the key and signing twice.")


def worker_start(cfg, plain: Path, tmp: Path) -> tuple[float, ...]:
    """CPU ms, in a child forked as a batch worker is (after signing.preflight and gc.freeze, as
    ``digitize batch`` does), to get its signer (signer_for: a token's session is opened in each
    worker), then of its first and second signature, page 1's top band handed over as a conversion
    does: what a worker pays once, apart from the steady per-file cost."""
    import dataclasses

    import pikepdf

    from digitize import signing, signmark
    from digitize.config import Settings

    settings = dataclasses.replace(Settings(), sign=cfg)
    signing.preflight(settings)
    with pikepdf.open(plain) as pdf:
        x1, y1, x2, y2 = (float(v) for v in pdf.pages[0].mediabox)
    band = signmark.page_grey(plain, x2 - x1, y2 - y1)
    gc.freeze()  # as pipelines/batch.py does before forking its workers
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        try:
            marks = [time.process_time()]
            signer = signing.signer_for(settings)
            marks.append(time.process_time())
            for n in range(2):
                signer.sign(plain, tmp / f"worker-{n}.pdf", band)
                marks.append(time.process_time())
            signer.close()
            os.write(write_fd, json.dumps([(b - a) * 1000 for a, b in zip(marks, marks[1:])]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    if not answer:
        raise SystemExit(f"fresh worker ({cfg.pkcs11_module or 'PKCS#12'}): signing failed")
    return tuple(json.loads(answer))


def plain_pdfa() -> Path:
    """The one-page A4 PDF/A the signatures part signs (made once with this tree, cached)."""
    from digitize.convert import ConvertOptions, convert_file

    from digitize import resident

    path = CACHE / "plain-a4.pdf"
    if not path.is_file():
        with tempfile.TemporaryDirectory(prefix="sign-bench-page-") as folder:
            run = Path(os.environ.setdefault("DIGITIZE_VALIDATOR_DIR", str(Path(folder) / "run")))
            CACHE.mkdir(parents=True, exist_ok=True)
            try:
                convert_file(make_page(Path(folder)), path.with_suffix(".tmp"), ConvertOptions(language="vie", jobs=1))
            finally:
                if run.parent == Path(folder):
                    resident.stop_servers(run)  # the validator started here, and only it
                    del os.environ["DIGITIZE_VALIDATOR_DIR"]
            os.replace(path.with_suffix(".tmp"), path)
    return path


def signatures_side_by_side(tmp: Path, baseline: Path | None, signatures: int, rounds: int) -> None:
    """Part 4: CPU per signature and a fresh worker's start, in child processes of this tree's code and
    of the baseline's taking turns (the same key, token and PDF/A), so a busy machine hits both alike."""
    codes = {"this tree": ROOT, **({"baseline": baseline.resolve()} if baseline else {})}
    plain_pdfa()
    results: dict[tuple[str, str], list[list[float]]] = {}
    for _ in range(max(1, rounds)):
        for key in ("PKCS#12", "SoftHSM2"):
            for label, code in codes.items():
                env = {**os.environ, "SIGN_BENCH_CODE": str(code)}
                done = subprocess.run([sys.executable, __file__, "--child", key, str(tmp), str(signatures)],
                                      env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"signatures ({key}, {label}) failed: {done.stderr.strip()[-400:]}")
                results.setdefault((key, label), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\nCPU per signature, {signatures} signatures x {max(1, rounds)} rounds per key and code, taking turns; "
          f"1-minute load average at the end {os.getloadavg()[0]:.2f}\n")
    print("| key | code | CPU ms per signature (median; rounds) | fresh worker: CPU ms to open the key / 1st / 2nd "
          "signature | vs baseline |")
    print("|---|---|---|---|---|")
    for key in ("PKCS#12", "SoftHSM2"):
        base = statistics.median(r[3] for r in results[(key, "baseline")]) if baseline else None
        for label in codes:
            rows = results[(key, label)]
            per = statistics.median(r[3] for r in rows)
            start = " / ".join(f"{statistics.median(r[i] for r in rows):.0f}" for i in range(3))
            change = f"{(per / base - 1) * 100:+.0f} %" if base and label != "baseline" else "-"
            print(f"| {key} | {label} | {per:.1f} ({', '.join(f'{r[3]:.0f}' for r in rows)}) | {start} | {change} |")
    print("\nEach child: signing.preload, then a forked worker opens the key and signs twice (fresh worker), "
          "then one open signer signs N times with page 1's top band handed over, as in a conversion.")


def child_key(key: str, tmp: Path):
    """The [sign] settings of KEY (PKCS#12 or SoftHSM2) made by make_key/make_token in TMP."""
    from digitize.config import SignSettings

    from pki import softhsm_module

    if key == "PKCS#12":
        return SignSettings(pkcs12=str(tmp / "signer.p12"), pin=PIN)
    os.environ["SOFTHSM2_CONF"] = str(tmp / "softhsm2.conf")
    return SignSettings(pkcs11_module=softhsm_module(), token_label="bench", key_label="signer", pin=PIN)


def signatures_child(key: str, folder: str, count: str) -> None:
    """In a child with SIGN_BENCH_CODE's digitize: print [open, 1st, 2nd, per signature] in CPU ms."""
    from digitize import signing, signmark

    cfg = child_key(key, Path(folder))
    plain = plain_pdfa()
    work = Path(tempfile.mkdtemp(prefix="sign-bench-child-", dir=folder))
    start = worker_start(cfg, plain, work)
    import pikepdf

    with pikepdf.open(plain) as pdf:
        x1, y1, x2, y2 = (float(v) for v in pdf.pages[0].mediabox)
    band = signmark.page_grey(plain, x2 - x1, y2 - y1)  # what the page worker hands over in a conversion
    signer = signing.Signer(cfg, cfg.pin)
    try:
        signer.sign(plain, work / "warm.pdf", band)
        cpu = time.process_time()
        for _ in range(int(count)):
            signer.sign(plain, work / "signed.pdf", band)
        per = (time.process_time() - cpu) / int(count) * 1000
    finally:
        signer.close()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps([*start, per]))


OPENING_PHASES = ("key opened", "1st signature", "per signature after")
OPENING_MARK = "sign-bench: opening starts"


def opening_side_by_side(tmp: Path, baseline: Path | None, signatures: int, rounds: int) -> None:
    """Part 5: the batch signer's opening, by phase (CPU ms) and by imported package, in fresh child
    processes of this tree and of the baseline taking turns (each a process as ``digitize batch`` is
    when its signer starts: the CLI and pipelines.batch imported)."""
    codes = {"this tree": ROOT, **({"baseline": baseline.resolve()} if baseline else {})}
    plain_pdfa()
    results: dict[tuple[str, str], list[list[float]]] = {}
    imports: dict[tuple[str, str], dict[str, float]] = {}
    for round_no in range(max(1, rounds)):
        for key in ("PKCS#12", "SoftHSM2"):
            order = list(codes.items()) if round_no % 2 == 0 else list(codes.items())[::-1]
            for label, code in order:
                env = {**os.environ, "SIGN_BENCH_CODE": str(code), "PYTHONPATH": str(code)}
                profiled = round_no == 0  # importtime's own bookkeeping costs CPU: its round is not timed
                command = [sys.executable, *(["-X", "importtime"] if profiled else []), __file__,
                           "--opening-child", key, str(tmp), str(signatures)]
                done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=code)
                if done.returncode != 0:
                    raise SystemExit(f"opening ({key}, {label}) failed: {done.stderr.strip()[-400:]}")
                if profiled:
                    imports[(key, label)] = _imports_by_package(done.stderr)
                else:
                    results.setdefault((key, label), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    if not results:
        raise SystemExit("--only opening needs --rounds 2 or more (the first round only attributes imports)")
    print(f"\nThe batch signer's key opening, CPU ms, {max(1, rounds) - 1} timed rounds per key and code, taking "
          f"turns; 1-minute load average at the end {os.getloadavg()[0]:.2f}\n")
    print("| key | code | " + " | ".join(OPENING_PHASES) + " | 24 documents: opening + signatures, ms per document |")
    print("|---|---|" + "---|" * (len(OPENING_PHASES) + 1))
    for key in ("PKCS#12", "SoftHSM2"):
        for label in codes:
            rows = results[(key, label)]
            med = [statistics.median(r[i] for r in rows) for i in range(len(OPENING_PHASES))]
            cells = [f"{m:.0f} ({', '.join(f'{r[i]:.0f}' for r in rows)})" if i < 2 else
                     f"{m:.1f} ({', '.join(f'{r[i]:.1f}' for r in rows)})" for i, m in enumerate(med)]
            per_doc = (med[0] + med[1] + 23 * med[2]) / 24
            print(f"| {key} | {label} | " + " | ".join(cells) + f" | {per_doc:.0f} |")
    packages = sorted({p for found in imports.values() for p in found},
                      key=lambda p: -max(found.get(p, 0.0) for found in imports.values()))
    print("\nWhat the opening imports (python -X importtime, self times summed by top-level package, ms of wall "
          "time: inflated on a busy machine, compare within a column; importtime's own overhead included, "
          "untimed round):\n")
    columns = list(imports)
    print("| package | " + " | ".join(f"{k}, {c}" for k, c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for package in packages[:14]:
        print(f"| {package} | " + " | ".join(f"{imports[c].get(package, 0.0):.0f}" for c in columns) + " |")
    print("| all | " + " | ".join(f"{sum(imports[c].values()):.0f}" for c in columns) + " |")
    print("\nkey opened: signing.signer_for, Signer.prepare and the certificate attribute, as SigningService._open; "
          "per signature: Signer.sign with page 1's top band handed over, as in a batch (the thread pool a token "
          "signs in counted: process CPU).")


def _imports_by_package(stderr: str) -> dict[str, float]:
    """ms of import self time by top-level package, from ``-X importtime`` lines after OPENING_MARK."""
    found: dict[str, float] = {}
    seen = False
    for line in stderr.splitlines():
        if OPENING_MARK in line:
            seen = True
            continue
        if not seen or not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = (part.strip() for part in line[len("import time:"):].split("|"))
        package = name.split(".")[0].lstrip("_") or name
        found[package] = found.get(package, 0.0) + int(own) / 1000
    return found


def opening_child(key: str, folder: str, count: str) -> None:
    """In a child with SIGN_BENCH_CODE's digitize, as the batch process is when its signer starts:
    print [key opened, 1st signature, per signature after] in CPU ms."""
    from digitize import cli  # noqa: F401 - what `digitize batch` has imported before its signer starts
    from pipelines import batch  # noqa: F401

    import dataclasses
    import threading

    from digitize import signing, signkeys, signmark
    from digitize.config import Settings

    settings = dataclasses.replace(Settings(), sign=child_key(key, Path(folder)))
    plain = plain_pdfa()
    band = signmark.top_band_grey(_page_pixels(plain), 595.0, 842.0) if hasattr(signmark, "top_band_grey") else None
    work = Path(tempfile.mkdtemp(prefix="sign-bench-opening-", dir=folder))
    print(OPENING_MARK, file=sys.stderr, flush=True)
    try:
        gc.freeze()  # as pipelines/batch.py does before it forks its workers and starts the signer
        marks = [time.process_time()]
        if hasattr(signing, "SigningService"):  # the batch's own opening, without its socket
            service = signing.SigningService.__new__(signing.SigningService)
            service.settings, service.lock, service.ready, service.error = settings, threading.Lock(), \
                threading.Event(), None
            service._keys = None  # no key process: the opening itself, in this process (as its key process does)
            service._open()
            if service.error is not None:
                raise service.error
        signer = signing.signer_for(settings)
        signer.prepare()
        if hasattr(signkeys, "prepare_certificate_attribute"):
            signkeys.prepare_certificate_attribute(signer._signer)
        marks.append(time.process_time())
        signer.sign(plain, work / "first.pdf", band)
        marks.append(time.process_time())
        for n in range(int(count)):
            signer.sign(plain, work / f"signed-{n}.pdf", band)
        marks.append(time.process_time())
        signer.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ms = [(b - a) * 1000 for a, b in zip(marks, marks[1:])]
    ms[2] /= max(1, int(count))
    print(json.dumps(ms))


def _page_pixels(pdf: Path):
    """Page 1's image of PDF as pixels (what a page worker holds when it hands over the top band)."""
    import numpy as np
    import pikepdf

    with pikepdf.open(pdf) as doc:
        page = doc.pages[0]
        xobj = next(iter((page.get_images() if hasattr(page, "get_images") else page.images).values()))
        return np.asarray(pikepdf.PdfImage(xobj).as_pil_image().convert("RGB"))


if __name__ == "__main__":
    main()
