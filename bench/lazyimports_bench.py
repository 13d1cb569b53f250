"""CPU ms that digitize.lazyimports spends per pyHanko module (deferred_code: parse, check, compile),
this tree against another tree's (--base, e.g. ``git archive sign15 | tar -x -C /tmp/sign15``, whose
lazyimports read a disk cache), taking turns in one process. Quick (~2 s): run it on a quiet machine.

    PYTHONPATH=$PWD .venv/bin/python bench/lazyimports_bench.py [--base /tmp/sign15] [--rounds 10]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(tree: Path):
    """digitize.lazyimports from TREE (a fresh import: the digitize package of that tree)."""
    for name in [m for m in sys.modules if m == "digitize" or m.startswith("digitize.")]:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    try:
        return importlib.import_module("digitize.lazyimports")
    finally:
        sys.path.remove(str(tree))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="another digitize tree to compare with")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print("command:", " ".join(["python", "bench/lazyimports_bench.py", *sys.argv[1:]]))
    codes = {"this tree": load(ROOT)}  # the base loaded last: its own digitize package stays in sys.modules
    if args.base:
        codes["base"] = load(args.base.resolve())
    rows: dict[tuple[str, str], list[float]] = {}
    modules = list(codes["this tree"].DEFERRED)
    for name in modules:
        parent = importlib.import_module(name.rpartition(".")[0])
        origin = importlib.machinery.PathFinder.find_spec(name, parent.__path__).origin
        for module in codes.values():
            if name in module.DEFERRED:  # a tree that does not defer this module: "-" in its column
                assert module.deferred_code(name, origin) is not None, f"{name}: not deferred by {module.__file__}"
        for _ in range(args.rounds):
            for label, module in codes.items():
                if name not in module.DEFERRED:
                    continue
                start = time.process_time()
                module.deferred_code(name, origin)
                rows.setdefault((name, label), []).append((time.process_time() - start) * 1000)
    print(f"\nlazyimports.deferred_code, CPU ms per call, median (min) of {args.rounds} taking turns; "
          f"1-minute load average {__import__('os').getloadavg()[0]:.2f}\n")
    print("| module | " + " | ".join(codes) + " |\n|---|" + "---|" * len(codes))
    for name in modules:
        print(f"| {name} | " + " | ".join(f"{statistics.median(rows[(name, label)]):.1f} "
                                          f"({min(rows[(name, label)]):.1f})" if (name, label) in rows else "-"
                                          for label in codes) + " |")
    print("| all | " + " | ".join(f"{sum(statistics.median(rows[(n, label)]) for n in modules if (n, label) in rows):.1f}"
                                  for label in codes) + " |")


if __name__ == "__main__":
    main()
