"""Where bucket parameters come from: the protocol every policy implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from openclaw.limiter.base import TakeRequest
from openclaw.limiter.core import NEVER, BucketParams, Decision


@runtime_checkable
class Policy(Protocol):
    """Maps a client (and optionally a route) to the limits its requests are charged to.

    ``name`` is the policy kind ("static", "model", ...); ``version`` identifies what the
    limits were computed from (a file's digest, a model version) so that every decision's
    metrics and introspection can say which policy decided.
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def limits_for(self, client_id: str, *, route: str | None = None) -> tuple[BucketParams, ...]:
        """The limits to charge, never empty. Unknown clients get their tier's default."""
        ...

    def tier_of(self, client_id: str) -> str:
        """The tier a client belongs to (for introspection and metrics labels)."""
        ...


def version_for(policy: Policy, client_id: str) -> str:
    """The version that decides for ``client_id``: the policy's ``version``, except for the
    clients a model canary serves (a policy may say so with a ``version_for`` method of its
    own; the protocol does not require one, so a hand-written policy stays a policy)."""
    own = getattr(policy, "version_for", None)
    return policy.version if own is None else str(own(client_id))


def window_left(policy: Policy) -> float | None:
    """Seconds until ``policy`` starts the buckets it keys by window afresh (the next window's
    keys are new, full buckets), when it says so with a ``window_left`` method of its own (a
    learned table); None otherwise."""
    own = getattr(policy, "window_left", None)
    return None if own is None else own()


def cut_waits(decision: Decision, left: float) -> Decision:
    """``decision`` on a window-keyed bucket (``bucket_of`` gave a ttl) with its waits cut at
    ``left`` (:func:`window_left`): the store sees a bucket refilling at a quota's slow rate
    and would have a client wait long past the fresh bucket of the next window. A wait that
    never ends (a cost above the capacity) stays."""
    retry, reset = decision.retry_after, decision.reset_after
    if retry <= left and reset <= left:
        return decision
    return Decision(
        decision.allowed,
        decision.remaining,
        decision.limit,
        retry if retry == NEVER else min(retry, left),
        min(reset, left),
    )


def cut_batch_waits(
    policy: Policy, takes: Sequence[TakeRequest], decisions: list[Decision]
) -> list[Decision]:
    """:func:`cut_waits` for the decisions of ``takes`` whose keys are window-keyed."""
    left = window_left(policy)
    if left is None:
        return decisions
    return [
        d if take.ttl is None else cut_waits(d, left)
        for take, d in zip(takes, decisions, strict=True)
    ]


def bucket_of(policy: Policy, client_id: str, key: str) -> tuple[str, float | None]:
    """The store key of ``key`` (``client_id``'s buckets, or its buckets for a route) under
    ``policy``, and the longest the store need keep it (``TakeRequest.ttl``; None: until its
    buckets are full again): ``(key, None)``, unless the policy says otherwise with a
    ``bucket_of`` method of its own (a learned table keys its buckets by window, and a
    window's keys are worth nothing once it is over: policy/learned.py)."""
    own = getattr(policy, "bucket_of", None)
    if own is None:
        return key, None
    store_key, ttl = own(client_id, key)
    return str(store_key), ttl
