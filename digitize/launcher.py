"""The ``digitize`` command's entry point, kept light: ``digitize run`` is handed to the resident
converter (zygote.py) before numpy, OpenCV or click are imported; everything else, and a run no
converter takes, goes to the CLI (cli.py) in this process."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        from . import zygote

        code = zygote.handover(args)
    except KeyboardInterrupt:  # before a child took the run: nothing ran
        print("digitize: interrupted", file=sys.stderr)
        return 130
    if code is not None:
        return code
    if "batch" in args:  # a batch that signs: its key process forked before the CLI is imported
        from .signing import early_key_process

        early_key_process(args)
    from .cli import main as run_here

    return run_here(args)
