"""Fuzz digitize's input readers for a bounded time: ``python fuzz/run.py [--seconds 300] [TARGET...]``.

Each target (fuzz/targets.py: every scan type and PDF image codec, sidecar JSON, manifest CSV,
case IDs) gets an equal share of the time. A reader that raises anything but one of digitize's
own errors is a finding: its (shrunk) input is saved under ``fuzz/findings/`` and listed at the
end, exit 1. Each finding must become a regression test before its fix (see tests/test_fuzz_inputs.py).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from fuzz.targets import Finding, targets  # noqa: E402

FINDINGS = ROOT / "fuzz" / "findings"
ROUND = 50  # examples per hypothesis run; runs repeat (new random inputs) until the time is up


def fuzz(name: str, strategy, reader, seconds: float) -> list[Finding]:
    found: list[Finding] = []
    until = time.monotonic() + seconds
    examples = 0

    @settings(max_examples=ROUND, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @given(strategy)
    def run(data) -> None:
        nonlocal examples
        examples += 1
        reader(data)

    while time.monotonic() < until:
        try:
            run()
        except Finding as e:
            found.append(e)
        except Exception as e:  # noqa: BLE001 - hypothesis itself (e.g. a flaky finding)
            print(f"  {name}: {type(e).__name__}: {e}", file=sys.stderr)
    print(f"{name}: {examples} inputs, {len(found)} finding(s)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="total time budget (default 300)")
    parser.add_argument("targets", nargs="*", help="targets to run (default all)")
    args = parser.parse_args(argv)
    known = targets()
    chosen = args.targets or list(known)
    unknown = [t for t in chosen if t not in known]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; known: {', '.join(known)}")
    findings: list[Finding] = []
    for name in chosen:
        strategy, reader = known[name]
        findings += fuzz(name, strategy, reader, args.seconds / len(chosen))
    for f in {(f.target, f.data): f for f in findings}.values():  # each input once
        FINDINGS.mkdir(parents=True, exist_ok=True)
        out = FINDINGS / f"{f.target}-{hashlib.sha256(f.data).hexdigest()[:12]}.bin"
        out.write_bytes(f.data)
        print(f"FINDING {f.target}: {type(f.error).__name__}: {f.error} -> {out.relative_to(ROOT)}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
