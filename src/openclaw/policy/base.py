"""Where bucket parameters come from: the protocol every policy implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from openclaw.limiter.core import BucketParams


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
