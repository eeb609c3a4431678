"""Hypothesis profiles for the fuzz suite, and the case counts printed at the end of a run.

``ci`` (the default) is derandomized: every run generates the same cases, so a failure seen in CI
is the failure a developer gets locally with the same command, and a green run stays green until the
code (or Hypothesis) changes. That trades breadth across runs for reproducibility; ``explore``
(``pytest tests/fuzz --hypothesis-profile=explore``) draws new random cases on every run and keeps
failing ones in ``.hypothesis/`` for the next, to go looking for new bugs locally.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.fuzz.cases import RECORDED

# deadline=None: a case's time depends on a real node shared with other tests on two cores, not on
# the case; a slow case is not a wrong answer (every call has its own timeout instead).
settings.register_profile("ci", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", derandomize=False, deadline=None)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_profile", None) is None:
        settings.load_profile("ci")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RECORDED:
        counts = ", ".join(f"{surface} {n:,}" for surface, n in sorted(RECORDED.items()))
        terminalreporter.write_line(f"fuzz cases run: {counts}")
