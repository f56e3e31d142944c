"""The simulated backend: ``c`` workers serving one FIFO queue, with a queue timeout.

A request admitted by the limiter at time ``t`` starts when the earliest worker is free
(``max(t, min free)``): with requests taken in arrival order this is exactly a FIFO G/G/c
queue, so latency (wait + service) grows with the load the limiter lets through. A request
that would wait longer than ``queue_timeout_s`` fails with a 5xx after waiting that long and
takes no worker (load shedding at a deadline, as a proxy's queue timeout does).

Service times: lognormal by default; from the trace's own response times (resampled) when it
has enough of them (access logs have none, so the NASA traces get the lognormal).

Sizes: the service time distribution is fixed here (median 50 ms, sigma 0.25: p99 89 ms, and
a 200 ms service time about once in a million), so the SLO is broken by queueing, not by the
service times' tail; ``scenarios.calibrate`` sizes the load and the worker count from the
trace (the trace alone comfortably within the SLO, the abuse scenarios able to overload it).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
#: Fewer known response times than this and the trace's own distribution is not used.
MIN_OBSERVED: Final = 100


@dataclass(frozen=True, slots=True)
class BackendConfig:
    workers: int = 2
    service_median_ms: float = 50.0
    service_sigma: float = 0.25
    queue_timeout_s: float = 1.0
    #: The SLO: p99 latency (nearest rank) of the requests completed in a second, and the
    #: share of them that failed.
    slo_p99_ms: float = 200.0
    slo_error_rate: float = 0.01

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        for name in ("service_median_ms", "queue_timeout_s", "slo_p99_ms"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.service_sigma < 0 or not 0 <= self.slo_error_rate < 1:
            raise ValueError("service_sigma must be >= 0 and slo_error_rate within [0, 1)")

    @property
    def mean_service_s(self) -> float:
        return self.service_median_ms / 1000.0 * math.exp(self.service_sigma**2 / 2)

    @property
    def capacity_rps(self) -> float:
        """Requests per second the workers can serve with the lognormal service times."""
        return self.workers / self.mean_service_s


@dataclass(frozen=True, slots=True)
class CapacityDrop:
    """For ``[start_s, end_s)`` (seconds on the replay's clock) only ``workers`` workers take
    new requests and each serves at ``speed`` times its normal speed. Not caused by load."""

    start_s: float
    end_s: float
    workers: int
    speed: float

    def __post_init__(self) -> None:
        if not self.end_s > self.start_s or self.workers < 1 or not self.speed > 0:
            raise ValueError("a capacity drop needs end > start, workers >= 1 and speed > 0")


def service_times(
    config: BackendConfig,
    n: int,
    rng: np.random.Generator,
    *,
    observed_ms: F64 | None = None,
) -> F64:
    """``n`` service times in seconds: resampled from ``observed_ms`` when there are enough
    known values, else lognormal (median and sigma from ``config``)."""
    if observed_ms is not None:
        known = observed_ms[np.isfinite(observed_ms) & (observed_ms >= 0)]
        if known.size >= MIN_OBSERVED:
            picked: F64 = rng.choice(known, size=n) / 1000.0
            return picked
    drawn: F64 = rng.lognormal(
        math.log(config.service_median_ms / 1000.0), config.service_sigma, size=n
    )
    return drawn


class Backend:
    """The queue's state: when each worker is next free (a heap), and the capacity drops."""

    __slots__ = ("_drop_end", "_drop_start", "_drops", "_free", "_next_drop", "_speed", "timeout")

    def __init__(self, config: BackendConfig, drops: Sequence[CapacityDrop] = ()) -> None:
        self._free: list[float] = [0.0] * config.workers
        self.timeout = config.queue_timeout_s
        self._drops = sorted(drops, key=lambda d: d.start_s)
        for a, b in zip(self._drops, self._drops[1:], strict=False):
            if b.start_s < a.end_s:
                raise ValueError("capacity drops must not overlap")
        self._next_drop = self._drops[0].start_s if self._drops else math.inf
        self._drop_start = math.inf
        self._drop_end = -math.inf
        self._speed = 1.0

    def serve(self, t: float, service_s: float) -> tuple[float, bool]:
        """Admit a request arriving at ``t`` (non-decreasing across calls) needing
        ``service_s`` of a worker: its latency, and False when it failed (queue timeout)."""
        if t >= self._next_drop:
            self._begin_drop()
        free = self._free
        first = free[0]
        start = first if first > t else t
        wait = start - t
        if wait > self.timeout:
            return self.timeout, False
        if self._drop_start <= start < self._drop_end:
            service_s = service_s / self._speed
        heapq.heapreplace(free, start + service_s)
        return wait + service_s, True

    def _begin_drop(self) -> None:
        drop = self._drops.pop(0)
        self._next_drop = self._drops[0].start_s if self._drops else math.inf
        self._drop_start, self._drop_end, self._speed = drop.start_s, drop.end_s, drop.speed
        # The workers that leave finish what they hold and come back at the drop's end.
        free = sorted(self._free)
        keep = min(drop.workers, len(free))
        self._free = free[:keep] + [max(f, drop.end_s) for f in free[keep:]]
        heapq.heapify(self._free)
