"""Token buckets: the pure arithmetic and the stores that keep bucket state."""

from __future__ import annotations

import importlib
from typing import Final

from openclaw.clock import Clock, monotonic
from openclaw.errors import ConfigError
from openclaw.limiter.base import BucketStore, Limits, TakeRequest, as_limits
from openclaw.limiter.core import (
    NEVER,
    BucketParams,
    BucketState,
    Decision,
    refill,
    refill_and_take,
    time_to_full,
)
from openclaw.limiter.memory import MemoryStore
from openclaw.settings import Settings

__all__ = [
    "BACKENDS",
    "NEVER",
    "BucketParams",
    "BucketState",
    "BucketStore",
    "Decision",
    "Limits",
    "MemoryStore",
    "TakeRequest",
    "as_limits",
    "create_store",
    "refill",
    "refill_and_take",
    "time_to_full",
]

#: URL scheme -> "module:class". Backends with optional dependencies are imported only when
#: their scheme is asked for, so the embedded default needs nothing beyond the core install.
BACKENDS: Final[dict[str, str]] = {
    "memory": "openclaw.limiter.memory:MemoryStore",
    "redis": "openclaw.limiter.redis:RedisStore",
    "rediss": "openclaw.limiter.redis:RedisStore",
    "unix": "openclaw.limiter.redis:RedisStore",
    "redis+cluster": "openclaw.limiter.redis:RedisStore",
    "rediss+cluster": "openclaw.limiter.redis:RedisStore",
}


def create_store(settings: Settings, *, clock: Clock = monotonic) -> BucketStore:
    """The store ``settings.store_url`` names."""
    url = settings.store_url
    scheme = url.partition("://")[0]
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in BACKENDS)
        raise ConfigError(f"unknown store URL scheme in {url!r}: use one of {known}")
    if scheme == "memory":
        return MemoryStore(max_buckets=settings.memory_max_buckets, clock=clock)
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"the {scheme}:// store needs the 'redis' extra: pip install 'openclaw[redis]'"
        ) from exc
    store: BucketStore = getattr(module, class_name)(url, settings=settings, clock=clock)
    return store
