"""``python -m taskward`` is the ``taskward`` console script."""

import sys

from taskward.cli import main

sys.exit(main())
