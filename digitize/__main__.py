"""``python -m digitize`` is the ``digitize`` command."""

import sys

from .cli import main

sys.exit(main())
