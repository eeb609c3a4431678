"""Counting the cases a property really ran, so a suite that silently generates little fails loudly.

Hypothesis's ``max_examples`` is an upper bound: filters, an exhausted search space or an early
stop can run fewer. Each fuzz test counts the inputs it sent and asserts its surface's minimum.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

MIN_CASES = 10_000
RECORDED: Counter[str] = Counter()  # surface -> cases, printed in the terminal summary


@dataclass(slots=True)
class CaseCount:
    surface: str
    cases: int = 0

    def add(self, n: int = 1) -> None:
        self.cases += n
        RECORDED[self.surface] += n

    def check(self, minimum: int = MIN_CASES) -> None:
        assert self.cases >= minimum, f"{self.surface}: only {self.cases} cases ran, expected at least {minimum}"
