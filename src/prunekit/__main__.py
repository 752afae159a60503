"""``python -m prunekit``."""

import sys

from .cli import main

sys.exit(main())
