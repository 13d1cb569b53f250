"""``python -m digitize`` is the ``digitize`` command."""

import sys

from .launcher import main

if __name__ == "__main__":  # page workers re-import the main module (forkserver): run only once
    sys.exit(main())
