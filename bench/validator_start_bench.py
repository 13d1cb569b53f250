#!/usr/bin/env python3
"""The resident veraPDF validator's start, side by side: this build's jar against another (issue 13).

Every `digitize run` after an idle period, and every batch or watch start, waits for one such
start beside the converter's. Each variant's server JVM is started as digitize starts it (the
resident server's flags and its own class-data archive, dumped by one untimed start first), the
variants taking turns; per start: wall seconds until READY, the JVM's CPU seconds then, each of
CHECKS checks of the PDF/A one after the other (the first pays the rule scripts' JIT), and its CPU
after them. Medians over the rounds. About a minute on 2 idle cores.

    .venv/bin/python bench/validator_start_bench.py --base /tmp/old/digitize-validator.jar
    git show c195f92:scripts/verapdf/DigitizeValidator.java > /tmp/old/DigitizeValidator.java  # an older build:
    javac -d /tmp/old/classes -cp "$(cat ~/.cache/digitize/verapdf.classpath)" /tmp/old/DigitizeValidator.java
    jar cf /tmp/old/digitize-validator.jar -C /tmp/old/classes .
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digitize import verapdf  # noqa: E402


def jvm_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_command(jar: Path, archive: Path, dump: bool, sock: Path) -> list[str]:
    """The resident server's command (verapdf._stream_command's flags), with JAR and its own archive."""
    found = verapdf._stream_command("2b")
    if found is None:
        raise SystemExit("no validator jar: run scripts/setup.sh first")
    command = list(found[0])
    cp = command.index("-cp")
    classpath = command[cp + 1].split(os.pathsep)
    command[cp + 1] = os.pathsep.join([*classpath[:-1], str(jar)])  # the validator jar is last
    share = f"-XX:ArchiveClassesAtExit={archive}" if dump else f"-XX:SharedArchiveFile={archive}"
    flavour = command.pop()  # "2b": the server takes --serve SOCKET [options] FLAVOUR
    return [command[0], share, *command[1:], "--serve", str(sock), flavour]


def start(jar: Path, archive: Path, pdf: Path, checks: int, folder: Path, dump: bool = False) -> dict[str, float]:
    sock = folder / f"v{time.monotonic_ns()}.sock"
    began = time.perf_counter()
    server = subprocess.Popen(server_command(jar, archive, dump, sock), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, cwd="/")
    try:
        line = server.stdout.readline()
        if not line.startswith(b"READY"):
            raise SystemExit(f"{jar}: {line.decode(errors='replace').strip()}")
        row = {"ready": time.perf_counter() - began, "cpu at READY": jvm_cpu(server.pid)}
        for n in range(checks):
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(str(sock))
                asked = time.perf_counter()
                conn.sendall(f"{pdf}\n".encode())
                answer = conn.makefile("rb").readline()
                row[f"check {n + 1}"] = time.perf_counter() - asked
            if not answer.startswith(b"PASS"):
                raise SystemExit(f"{jar}: {pdf} not valid: {answer.decode(errors='replace').strip()}")
        row["cpu after"] = jvm_cpu(server.pid)
        if dump:
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(str(sock))
                conn.sendall(b"QUIT\n")
                conn.makefile("rb").readline()
            server.wait(60)
        return row
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def sample_pdfa(folder: Path) -> Path:
    """A digitize PDF/A of the first easy sample (its text layer, image, XMP and output intent)."""
    pdf = folder / "sample.pdf"
    subprocess.run([sys.executable, "-m", "digitize", "run", "--no-validate", "--lang", "vie",
                    str(ROOT / "samples" / "01_clean.png"), str(pdf)], check=True, cwd=ROOT)
    return pdf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="another build's digitize-validator.jar to put beside this one")
    parser.add_argument("--pdf", type=Path, help="the PDF/A to check (default: a digitize output of a sample)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--checks", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vsb-") as tmp:
        folder = Path(tmp)
        pdf = args.pdf.resolve() if args.pdf else sample_pdfa(folder)
        variants = {"this build": verapdf._stream_jar()}
        if args.base:
            variants["base"] = args.base.resolve()
        jars = {}
        for name, jar in variants.items():  # own copies: each with its own class archive, dumped once
            jars[name] = folder / name.replace(" ", "-") / "digitize-validator.jar"
            jars[name].parent.mkdir()
            shutil.copy2(jar, jars[name])
            start(jars[name], jars[name].with_suffix(".jsa"), pdf, 1, folder, dump=True)
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in jars}
        for n in range(args.rounds):
            for name in (list(jars) if n % 2 == 0 else list(jars)[::-1]):
                rows[name].append(start(jars[name], jars[name].with_suffix(".jsa"), pdf, args.checks, folder))
    columns = list(next(iter(rows.values()))[0])
    print(f"validator starts, {args.rounds} rounds taking turns, {args.checks} checks each of {pdf.name}; "
          f"medians (s), 1-min load average {os.getloadavg()[0]:.2f} at the end")
    print()
    print("| build | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, runs in rows.items():
        print(f"| {name} | " + " | ".join(f"{statistics.median(r[c] for r in runs):.2f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
