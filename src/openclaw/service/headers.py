"""Rate-limit response headers, as pure functions of the limits and the decision.

The ``RateLimit-Policy`` and ``RateLimit`` fields follow draft-ietf-httpapi-ratelimit-headers-10:
both are Structured Field Lists whose items are Strings (the policy's name) with Integer
parameters, for example::

    RateLimit-Policy: "free";q=20;w=10,"free.1";q=1000;w=4000
    RateLimit: "free";r=12;t=1

A token bucket maps onto a quota policy as ``q`` = capacity (the most a client can spend at
once) and ``w`` = the seconds a refill from empty takes. ``RateLimit`` reports the binding
limit of the decision: ``r`` its whole remaining tokens, ``t`` the whole seconds until more
quota arrives (omitted when none ever will, or the bucket is full).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Final

from openclaw.limiter.core import BucketParams, Decision

#: The largest Integer a Structured Field may carry (RFC 9651, section 3.3.1).
SF_INT_MAX: Final = 999_999_999_999_999


def sf_integer(value: float) -> str:
    """A non-negative Structured Field Integer; out-of-range values are clamped."""
    if math.isnan(value) or value <= 0:
        return "0"
    if value >= SF_INT_MAX:
        return str(SF_INT_MAX)
    return str(int(value))


@functools.lru_cache(maxsize=4096)  # tier names: few, and asked for on every decision
def sf_string(value: str) -> str:
    """A Structured Field String. Only printable ASCII is allowed there, so anything else
    (a tier name in another script, say) becomes ``?`` rather than an invalid header."""
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append("?")
    return '"' + "".join(out) + '"'


def limit_names(tier: str, count: int) -> list[str]:
    """Names of a client's limits in the headers: the tier, then ``tier.1``, ``tier.2``..."""
    return [tier if i == 0 else f"{tier}.{i}" for i in range(count)]


def window_seconds(params: BucketParams) -> int | None:
    """Whole seconds a refill from empty takes (at least 1); None for a bucket that never
    refills, which has no window."""
    if params.refill_rate <= 0:
        return None
    return max(1, math.ceil(params.capacity / params.refill_rate))


def binding_index(limits: Sequence[BucketParams], decision: Decision) -> int:
    """Which of ``limits`` the decision's ``remaining``/``limit`` describe.

    The store reports the binding limit by its capacity; when several limits share it, the
    first is named (their ``q`` is the same, so a client reads the same thing).
    """
    for i, params in enumerate(limits):
        if params.capacity == decision.limit:
            return i
    # A failure-mode decision reports the smallest capacity.
    return min(range(len(limits)), key=lambda i: limits[i].capacity)


def ratelimit_policy(tier: str, limits: Sequence[BucketParams]) -> str:
    """The ``RateLimit-Policy`` field value: every limit the client is charged against."""
    return _ratelimit_policy(tier, tuple(limits))


# The value depends only on the tier and its (immutable) limits, and building it was a tenth
# of a decision's time; policies have few distinct tiers, so a small cache holds them all.
@functools.lru_cache(maxsize=4096)
def _ratelimit_policy(tier: str, limits: tuple[BucketParams, ...]) -> str:
    items = []
    for name, params in zip(limit_names(tier, len(limits)), limits, strict=True):
        item = f"{sf_string(name)};q={sf_integer(math.floor(params.capacity))}"
        window = window_seconds(params)
        if window is not None:
            item += f";w={sf_integer(window)}"
        items.append(item)
    return ",".join(items)


def seconds_until_more(params: BucketParams, decision: Decision) -> int | None:
    """Whole seconds until the binding bucket holds another whole token, or until a denied
    request could be retried; None when that never happens or the bucket is already full."""
    if not decision.allowed:
        if decision.retry_never:
            return None
        return math.ceil(decision.retry_after)
    if decision.remaining >= params.capacity or params.refill_rate <= 0:
        return None
    missing = math.floor(decision.remaining) + 1 - decision.remaining
    until = min(missing / params.refill_rate, decision.reset_after)
    return max(0, math.ceil(until))


def ratelimit(tier: str, limits: Sequence[BucketParams], decision: Decision) -> str:
    """The ``RateLimit`` field value: the binding limit's remaining quota and reset."""
    index = binding_index(limits, decision)
    name = tier if index == 0 else f"{tier}.{index}"  # as limit_names() numbers them
    item = f"{sf_string(name)};r={sf_integer(math.floor(decision.remaining))}"
    more = seconds_until_more(limits[index], decision)
    if more is not None:
        item += f";t={sf_integer(more)}"
    return item


def retry_after(decision: Decision) -> str | None:
    """The ``Retry-After`` value of a denial (delay-seconds, rounded up, at least 1), or None
    when a retry can never succeed (the cost exceeds a capacity): promising a time would
    only invite a retry storm."""
    if decision.allowed or decision.retry_never:
        return None
    return str(max(1, math.ceil(decision.retry_after)))


def legacy(decision: Decision) -> dict[str, str]:
    """``X-RateLimit-Limit/-Remaining/-Reset`` as most pre-draft servers send them; Reset is
    seconds from now until the bucket is full again, not an epoch time."""
    return {
        "X-RateLimit-Limit": sf_integer(math.floor(decision.limit)),
        "X-RateLimit-Remaining": sf_integer(math.floor(decision.remaining)),
        "X-RateLimit-Reset": sf_integer(math.ceil(decision.reset_after)),
    }


def rate_limit_headers(
    tier: str,
    limits: Sequence[BucketParams],
    decision: Decision,
    *,
    throttled: bool = False,
    legacy_headers: bool = False,
) -> dict[str, str]:
    """Every rate-limit header of a response to a decided request; ``Retry-After`` only when
    the response is the 429 itself (``throttled``)."""
    headers = {
        "RateLimit-Policy": ratelimit_policy(tier, limits),
        "RateLimit": ratelimit(tier, limits, decision),
    }
    after = retry_after(decision) if throttled else None
    if after is not None:
        headers["Retry-After"] = after
    if legacy_headers:
        headers.update(legacy(decision))
    return headers
