"""Clocks are injected, never read inside the arithmetic, so tests can drive time by hand."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Seconds as a float; only differences between two readings matter."""

    def __call__(self) -> float: ...


#: The default clock: immune to wall-clock steps (NTP, DST) that would refill or drain buckets.
#: The C function itself, not a wrapper: it is called once per decision.
monotonic: Clock = time.monotonic


class FakeClock:
    """A clock for tests and simulations: it moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self.now += seconds
