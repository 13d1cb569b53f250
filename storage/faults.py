"""Named fault points for crash tests: ``DIGITIZE_FAULT_PAUSE=<name>`` makes the process stop there.

The kill -9 test needs a real process frozen at an exact spot (objects written, index not committed).
Production never sets the variable; when unset the hook is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "DIGITIZE_FAULT_PAUSE"


def fault_point(name: str) -> None:
    if os.environ.get(ENV) != name:
        return
    print(f"FAULT-PAUSE {name}", file=sys.stdout, flush=True)
    while True:  # wait to be killed
        time.sleep(3600)
