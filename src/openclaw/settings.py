"""The one Settings class. ``os.environ`` is read here and nowhere else."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

FailureMode = Literal["open", "closed", "local"]


class Settings(BaseSettings):
    """Every knob, with the embedded defaults that need no set-up.

    Environment variables use the ``OPENCLAW_`` prefix, e.g. ``OPENCLAW_STORE_URL``.
    """

    model_config = SettingsConfigDict(env_prefix="OPENCLAW_", frozen=True, extra="forbid")

    store_url: str = Field(
        default="memory://",
        description="Bucket store: memory://, redis://host:port/db, rediss://..., "
        "redis+cluster://host:port (any one node of the cluster).",
    )
    memory_max_buckets: int = Field(
        default=1_000_000,
        gt=0,
        description="Most buckets the memory store keeps; idle ones are evicted first.",
    )
    redis_timeout_ms: float = Field(
        default=50.0,
        gt=0,
        description="Socket timeout per Redis round trip; a decision that takes longer "
        "follows failure_mode. Envoy gives the whole rate-limit call 20 ms.",
    )
    redis_connect_timeout_ms: float = Field(default=100.0, gt=0)
    redis_retry_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="After a Redis failure, decide by failure_mode for this long before trying "
        "Redis again, so an outage does not cost a timeout per request.",
    )
    redis_key_prefix: str = Field(default="oc", min_length=1, pattern=r"^[^{}]+$")
    redis_max_batch: int = Field(
        default=512,
        gt=0,
        description="Most concurrent decisions coalesced into one pipelined round trip.",
    )
    failure_mode: FailureMode = Field(
        default="open",
        description="When the store is unreachable: open (allow, as Envoy does), "
        "closed (deny), or local (decide with an in-process memory store).",
    )
