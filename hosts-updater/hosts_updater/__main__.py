"""``python -m hosts_updater`` = the ``hosts-updater`` console script."""

import sys

from .cli import main

sys.exit(main())
