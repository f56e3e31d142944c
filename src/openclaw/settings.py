"""The one Settings class. ``os.environ`` is read here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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

    # -- the HTTP service (openclaw serve) ---------------------------------------------
    http_host: str = Field(
        default="127.0.0.1",
        description="Address `openclaw serve` binds; loopback unless told otherwise.",
    )
    http_port: int = Field(default=8080, ge=0, le=65535, description="Port `openclaw serve` binds.")
    policy_path: Path | None = Field(
        default=None,
        description="Static policy file (TOML or YAML); unset: the built-in default policy.",
    )
    enforce: bool = Field(
        default=False,
        description="Answer 429 (with Retry-After) when a decision denies; otherwise 200 with "
        "allowed=false, for callers (gateways) that enforce themselves.",
    )
    legacy_headers: bool = Field(
        default=False,
        description="Also send X-RateLimit-Limit/-Remaining/-Reset, for clients that predate "
        "the IETF RateLimit and RateLimit-Policy fields.",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        gt=0,
        description="Largest request body accepted; larger ones get 413 before being read whole.",
    )
    max_cost: float = Field(
        default=1_000_000.0,
        gt=0,
        allow_inf_nan=False,
        description="Largest cost one request may ask for; larger ones are rejected as absurd.",
    )
    max_batch: int = Field(
        default=10_000,
        gt=0,
        description="Most decisions one batch request may ask for.",
    )
    max_client_id_length: int = Field(
        default=256,
        gt=0,
        description="Longest client id accepted: ids become store keys, so unbounded ones "
        "would let a caller grow memory at will.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the admin endpoints (reload); unset: admin is disabled.",
    )
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of Envoy's gRPC rate-limit service (RateLimitService/"
        "ShouldRateLimit) that `openclaw serve` also runs, on the same store and policy; "
        "unset: HTTP only.",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        gt=0,
        description="On SIGTERM, how long in-flight requests may take to finish.",
    )

    # -- telemetry (ingestion, stores) -------------------------------------------------
    telemetry_url: str = Field(
        default="duckdb://openclaw-telemetry.duckdb",
        description="Telemetry store: duckdb://PATH (relative to the working directory; "
        "duckdb:///abs/path for an absolute one; duckdb://:memory: for tests) or "
        "clickhouse://host:port/database (the native protocol).",
    )
    telemetry_retention_days: float = Field(
        default=90.0,
        gt=0,
        description="Raw events older than this are dropped (the drift baseline needs weeks).",
    )
    telemetry_batch_size: int = Field(
        default=10_000,
        gt=0,
        description="Events buffered before the in-process batcher writes them to the store.",
    )
    telemetry_flush_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Longest an accepted event waits in the batcher before it is written.",
    )
    telemetry_max_body_bytes: int = Field(
        default=16 * 1_048_576,
        gt=0,
        description="Largest NDJSON body POST /api/v1/telemetry accepts (413 above it).",
    )
    telemetry_queue_max: int = Field(
        default=1_000_000,
        gt=0,
        description="Most events waiting for the store; beyond it the service answers 503 "
        "(retry later) rather than grow without bound or drop accepted events.",
    )
    telemetry_connect_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="Connect timeout of a server telemetry store (ClickHouse): an unreachable "
        "server fails in seconds, not minutes.",
    )
    telemetry_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Socket send/receive timeout of one round trip to a server telemetry store "
        "(ClickHouse sends progress while a long query runs, so this bounds silence, not work).",
    )

    # -- features and labels -------------------------------------------------------------
    window_s: float = Field(
        default=300.0,
        gt=0,
        description="Feature and label window: the model predicts each client's bucket for "
        "the next window from what it did up to the end of this one.",
    )
    label_horizon_s: float = Field(
        default=60.0,
        gt=0,
        description="H of the label: r* is the most requests in any H seconds of the window, "
        "divided by H.",
    )
