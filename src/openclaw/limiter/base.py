"""The protocol every bucket store implements, and the request type they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from openclaw.errors import InvalidParamsError
from openclaw.limiter.core import NEVER, BucketParams, Decision, check_cost

#: One limit, or several checked and charged together (all or none).
Limits = BucketParams | Sequence[BucketParams]


def as_limits(limits: Limits) -> tuple[BucketParams, ...]:
    """Normalise the ``limits`` argument every store accepts."""
    if isinstance(limits, BucketParams):
        return (limits,)
    out = tuple(limits)
    if not out:
        raise InvalidParamsError("a key needs at least one limit")
    for item in out:
        if not isinstance(item, BucketParams):
            raise InvalidParamsError(f"limits must be BucketParams, not {type(item).__name__}")
    return out


@dataclass(frozen=True, slots=True)
class TakeRequest:
    """One decision of a batch."""

    key: str
    limits: tuple[BucketParams, ...]
    cost: float = field(default=1.0, kw_only=True)
    #: Keep the key at most this many seconds after a write, even when its buckets are not
    #: full again by then (a key that stops mattering, such as a window's: policy/learned.py);
    #: None: until they are full, the time a forgotten key decides the same.
    ttl: float | None = field(default=None, kw_only=True)

    @classmethod
    def of(
        cls, key: str, limits: Limits, *, cost: float = 1.0, ttl: float | None = None
    ) -> TakeRequest:
        return cls(key, as_limits(limits), cost=check_cost(cost), ttl=check_ttl(ttl))


def check_ttl(ttl: float | None) -> float | None:
    """``ttl`` when it is None or a positive finite number of seconds; else the reason."""
    if ttl is None or (isinstance(ttl, int | float) and 0.0 < ttl < NEVER):
        return None if ttl is None else float(ttl)
    raise InvalidParamsError(f"ttl must be a positive finite number of seconds, got {ttl!r}")


@runtime_checkable
class BucketStore(Protocol):
    """Where bucket state lives. Implementations: ``memory``, ``redis`` (and Redis Cluster).

    ``take`` and ``take_many`` block; ``atake`` and ``atake_many`` are for asyncio code and
    never block the loop. Every method decides atomically per key. ``ttl``: as
    :attr:`TakeRequest.ttl`.
    """

    def take(
        self, key: str, limits: Limits, *, cost: float = 1.0, ttl: float | None = None
    ) -> Decision: ...

    def take_many(self, requests: Sequence[TakeRequest]) -> list[Decision]: ...

    async def atake(
        self, key: str, limits: Limits, *, cost: float = 1.0, ttl: float | None = None
    ) -> Decision: ...

    async def atake_many(self, requests: Sequence[TakeRequest]) -> list[Decision]: ...

    def reset(self, key: str) -> None:
        """Forget a key's buckets: its next request finds them full."""

    def ping(self) -> bool:
        """True when the store can decide from its own state right now."""

    def close(self) -> None: ...

    async def aclose(self) -> None: ...
