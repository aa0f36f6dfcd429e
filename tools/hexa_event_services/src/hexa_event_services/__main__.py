"""``python -m hexa_event_services``: the same command line as ``scripts/services``."""

import sys

from .cli import main

sys.exit(main())
