"""Run ``taskward node ARGS`` under cProfile (event-loop thread); stats go to $BENCH_NODE_CPROFILE.

Used by _common.start_node when BENCH_NODE_CPROFILE is set; read with ``python -m pstats FILE``.
"""

from __future__ import annotations

import cProfile
import os
import sys

from taskward.cli import main

if __name__ == "__main__":
    prof = cProfile.Profile()
    code = prof.runcall(main, sys.argv[1:])
    prof.dump_stats(os.environ["BENCH_NODE_CPROFILE"])
    sys.exit(code)
