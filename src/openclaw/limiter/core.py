"""Token-bucket arithmetic: pure functions of (state, params, now, cost).

Every store calls :func:`refill_and_take`; the Redis Lua script (``lua/take.lua``) is its
twin and must stay expression-for-expression identical, because the parity test demands
bit-identical decisions from both. Change one, change the other.

This module is compiled with mypyc when the package is built (see ``setup.py``): the hot
types are native ``@final`` classes with ``Final`` attributes, which mypyc makes read-only
at run time and builds without the interpreter. A frozen dataclass would be built through
the interpreter's ``object.__setattr__`` and cost several times more than the decision itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, final

from openclaw.errors import InvalidParamsError

#: ``retry_after`` of a request that can never be allowed: its cost exceeds a capacity, or
#: a bucket that does not refill is short of it. Made explicit so callers test for it
#: (``decision.retry_never``) rather than meet an exception deep in the stack.
NEVER: Final[float] = math.inf


@dataclass(frozen=True, slots=True)
class BucketParams:
    """One limit: ``capacity`` tokens at most (the largest burst), refilled at ``refill_rate``/s."""

    capacity: float
    refill_rate: float

    def __post_init__(self) -> None:
        # A wrong type is a TypeError (compiled, the field types are enforced before this).
        for name in ("capacity", "refill_rate"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InvalidParamsError(f"{name} must be finite and >= 0, got {value!r}")
            # Normalise ints so the arithmetic (and its Lua twin) only ever sees doubles.
            object.__setattr__(self, name, float(value))


#: Tokens in a bucket as of a time on the store's clock: ``(tokens, updated_at)``.
#: A plain tuple of floats on purpose: CPython's garbage collector stops tracking such tuples,
#: so a million stored buckets add nothing to a collection. As objects they made every full
#: collection walk them all (about 230 ms at a million buckets: a latency spike far past
#: Envoy's 20 ms budget).
BucketState = tuple[float, float]


@final
class Decision:
    """The answer to one request.

    ``remaining`` and ``limit`` describe the binding limit: the one that denied the request,
    or, when allowed, the one with the fewest tokens left. ``retry_after`` is 0 when allowed,
    else the seconds until a request of the same cost would be, or :data:`NEVER`.
    ``reset_after`` is the seconds until every bucket of the key is full again.
    """

    __slots__ = ("allowed", "limit", "remaining", "reset_after", "retry_after")

    def __init__(
        self,
        allowed: bool,
        remaining: float,
        limit: float,
        retry_after: float,
        reset_after: float,
    ) -> None:
        self.allowed: Final = allowed
        self.remaining: Final = remaining
        self.limit: Final = limit
        self.retry_after: Final = retry_after
        self.reset_after: Final = reset_after

    @property
    def retry_never(self) -> bool:
        """True when retrying the same request can never succeed."""
        return self.retry_after == NEVER

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return (
            self.allowed == other.allowed
            and self.remaining == other.remaining
            and self.limit == other.limit
            and self.retry_after == other.retry_after
            and self.reset_after == other.reset_after
        )

    def __hash__(self) -> int:
        return hash((self.allowed, self.remaining, self.limit, self.retry_after, self.reset_after))

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed!r}, remaining={self.remaining!r}, "
            f"limit={self.limit!r}, retry_after={self.retry_after!r}, "
            f"reset_after={self.reset_after!r})"
        )


def check_cost(cost: float) -> float:
    """Validate a request cost at the boundary, so the arithmetic never sees NaN or a refund."""
    if not (cost >= 0.0 and cost < NEVER):  # also rejects NaN
        raise InvalidParamsError(f"cost must be finite and >= 0, got {cost!r}")
    return float(cost)


def refill(state: BucketState | None, params: BucketParams, now: float) -> float:
    """Tokens in the bucket at ``now``. A missing bucket is a full one (that is why idle
    buckets may expire once full), and a clock that steps back refills nothing."""
    capacity = params.capacity
    if state is None:
        return capacity
    # Explicit comparisons, not min()/max(): they are what the Lua twin does, and compile
    # to plain float compares.
    elapsed = now - state[1]
    if elapsed < 0.0:
        elapsed = 0.0
    tokens = state[0] + elapsed * params.refill_rate
    return capacity if tokens > capacity else tokens


def time_to_full(tokens: float, params: BucketParams) -> float:
    """Seconds until a bucket holding ``tokens`` is full; :data:`NEVER` if it cannot refill."""
    if tokens >= params.capacity:
        return 0.0
    if params.refill_rate > 0.0:
        return (params.capacity - tokens) / params.refill_rate
    return NEVER


def refill_and_take(  # noqa: PLR0912, PLR0915 (one pass per case mirrors the Lua twin)
    states: Sequence[BucketState | None],
    limits: Sequence[BucketParams],
    *,
    now: float,
    cost: float,
) -> tuple[tuple[BucketState, ...] | None, Decision]:
    """Refill every bucket of a key to ``now`` and charge ``cost`` to all of them, or to none.

    ``states[i]`` belongs to ``limits[i]``; missing states are full buckets. Returns the new
    states to store, or ``None`` when the request is denied and nothing needs writing (a
    denial changes nothing a later refill would not recompute), and the decision.
    """
    n = len(limits)
    if n == 0:
        raise InvalidParamsError("a key needs at least one limit")
    n_states = len(states)
    if n == 1:
        # The common case without the lists: the same expressions as the loop below.
        params = limits[0]
        level = refill(states[0] if n_states else None, params, now)
        if cost > params.capacity:
            return None, Decision(False, level, params.capacity, NEVER, time_to_full(level, params))
        if level < cost:
            rate = params.refill_rate
            wait = (cost - level) / rate if rate > 0.0 else NEVER
            return None, Decision(False, level, params.capacity, wait, time_to_full(level, params))
        level = level - cost
        return ((level, now),), Decision(
            True, level, params.capacity, 0.0, time_to_full(level, params)
        )
    levels: list[float] = []
    fits = True
    never = -1  # index of the first limit whose capacity is below the cost
    for i in range(n):
        params = limits[i]
        level = refill(states[i] if i < n_states else None, params, now)
        levels.append(level)
        if cost > params.capacity:
            if never < 0:
                never = i
        elif level < cost:
            fits = False

    if never < 0 and fits:
        new_states: list[BucketState] = []
        binding = 0
        reset_after = 0.0
        for i in range(n):
            level = levels[i] - cost
            levels[i] = level
            new_states.append((level, now))
            if level < levels[binding]:
                binding = i
            full_in = time_to_full(level, limits[i])
            if full_in > reset_after:
                reset_after = full_in
        return tuple(new_states), Decision(
            True, levels[binding], limits[binding].capacity, 0.0, reset_after
        )

    if never >= 0:
        binding = never
        retry_after = NEVER
    else:
        # The binding limit is the one that makes the caller wait longest.
        binding = -1
        retry_after = 0.0
        for i in range(n):
            if levels[i] < cost:
                rate = limits[i].refill_rate
                wait = (cost - levels[i]) / rate if rate > 0.0 else NEVER
                if binding < 0 or wait > retry_after:
                    binding = i
                    retry_after = wait
    reset_after = 0.0
    for i in range(n):
        full_in = time_to_full(levels[i], limits[i])
        if full_in > reset_after:
            reset_after = full_in
    return None, Decision(
        False, levels[binding], limits[binding].capacity, retry_after, reset_after
    )
