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
        if code is not None:
            return code
        if "batch" in args:  # a batch that signs: its key process forked before the CLI is imported
            from .signing import early_key_process

            early_key_process(args)
        from .cli import main as run_here
    except KeyboardInterrupt:  # before a child took the run or the CLI started: nothing ran (a key
        print("digitize: interrupted", file=sys.stderr)  # process forked meanwhile never logged in)
        return 130
    return run_here(args)
