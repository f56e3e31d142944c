"""The AIMD governor's pure core: a multiplier on every policy's buckets, driven by backend
health. The service (``policy.learned``) and the simulator (``sim``) run this same code."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GovernorConfig:
    """AIMD on backend health, checked every ``interval_s`` on the requests completed in it.

    Unhealthy (p99 above the SLO or error rate above the bound): the multiplier of clients
    running above their envelope (more requests in this window than their bucket admits at
    its own rate, ``b + r t``) is multiplied by ``decrease``; after ``hot_grace`` unhealthy
    intervals in a row, everyone's is too. Healthy: both recover by ``increase`` per
    interval, up to 1. A multiplier scales capacity and rate alike, never below ``floor``
    (:func:`scale_bucket`).
    """

    interval_s: float = 1.0
    decrease: float = 0.5
    increase: float = 0.02
    floor: float = 0.05
    hot_grace: int = 2


#: A governed capacity within this of a whole number counts as that number (``0.05 * 40`` is
#: 2, not 1.9999999999999998).
_WHOLE_SLACK = 1e-9


def scale_bucket(capacity: float, refill_rate: float, multiplier: float) -> tuple[float, float]:
    """A bucket ``(capacity, refill_rate)`` under a governor multiplier below 1: its rate times
    the multiplier, its capacity times the multiplier *rounded down to whole requests*, never
    below one request (unless the bucket was smaller to start with).

    Whole requests, because a request takes a whole token. A cut capacity of 1.93 admits one
    request and keeps 0.93, which the refill then turns into a second token a few seconds on;
    on quota-shaped buckets (a window's capacity, a negligible refill) that brought every
    client the governor had cut back at once, the overload back with them, and the governor
    round again, every 20 s or so for the rest of the window (docs/evaluation.md, "The
    governor's cut, in whole requests"). The service and the replay both call this.
    """
    if multiplier >= 1.0:
        return capacity, refill_rate
    whole = float(math.floor(capacity * multiplier + _WHOLE_SLACK))
    return max(whole, min(capacity, 1.0)), refill_rate * multiplier


def p99_breaks(done: int, slow: int) -> bool:
    """True when the nearest-rank p99 of ``done`` latencies, ``slow`` of them above the SLO,
    is above it: fewer than ``ceil(0.99 done)`` are within it."""
    return done > 0 and done - slow < (99 * done + 99) // 100


class GovernorState:
    """The AIMD state machine, pure: fed one interval's completions at a time."""

    __slots__ = ("bad_in_row", "config", "m_all", "m_hot", "slo_error_rate")

    def __init__(self, config: GovernorConfig, *, slo_error_rate: float) -> None:
        self.config = config
        self.slo_error_rate = slo_error_rate
        self.m_all = 1.0
        self.m_hot = 1.0
        self.bad_in_row = 0

    @property
    def hot(self) -> float:
        """The multiplier of clients above their envelope."""
        return min(self.m_hot, self.m_all)

    def observe(self, done: int, slow: int, errors: int) -> bool:
        """One interval's health; True when a multiplier changed."""
        c = self.config
        before = (self.m_all, self.m_hot)
        unhealthy = p99_breaks(done, slow) or errors > self.slo_error_rate * done
        if unhealthy:
            self.bad_in_row += 1
            self.m_hot = max(self.m_hot * c.decrease, c.floor)
            if self.bad_in_row > c.hot_grace:
                self.m_all = max(self.m_all * c.decrease, c.floor)
        else:
            self.bad_in_row = 0
            self.m_all = min(self.m_all + c.increase, 1.0)
            self.m_hot = min(self.m_hot + c.increase, 1.0)
        return (self.m_all, self.m_hot) != before
