"""The one Settings class. ``os.environ`` is read here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

FailureMode = Literal["open", "closed", "local"]


class Settings(BaseSettings):
    """Every knob, with the embedded defaults that need no set-up.

    Environment variables use the ``OPENCLAW_`` prefix, e.g. ``OPENCLAW_STORE_URL``.
    """

    model_config = SettingsConfigDict(env_prefix="OPENCLAW_", frozen=True, extra="forbid")

    # -- the bucket store (limiter) --------------------------------------------------------
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
    redis_connect_timeout_ms: float = Field(
        default=100.0, gt=0, description="Timeout of a new connection to Redis."
    )
    redis_retry_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="After a Redis failure, decide by failure_mode for this long before trying "
        "Redis again, so an outage does not cost a timeout per request.",
    )
    redis_key_prefix: str = Field(
        default="oc",
        min_length=1,
        pattern=r"^[^{}]+$",
        description="Prefix of the bucket keys in Redis (PREFIX:{client}); without braces, "
        "which would break the hash tag that keeps a client's keys on one cluster slot.",
    )
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

    # -- the model: registry, and the bounds every prediction is clamped to --------------
    model_registry_path: Path = Field(
        default=Path("models"),
        description="Model registry: a directory of immutable versions (model-YYYYMMDD[-N]), "
        "the champion/challenger aliases and the audit log (relative to the working directory).",
    )
    pipeline_dir: Path = Field(
        default=Path("pipeline"),
        description="State of the retraining pipeline (openclaw pipeline): one record per run "
        "(runs/RUN_ID/run.json), the drift baseline, the latest drift and metrics.prom for a "
        "node-exporter textfile collector (relative to the working directory).",
    )
    model_max_capacity: float = Field(
        default=1_000_000.0,
        gt=0,
        allow_inf_nan=False,
        description="Largest bucket capacity (tokens) a model may assign, whatever it predicts.",
    )
    model_max_refill_rate: float = Field(
        default=100_000.0,
        gt=0,
        allow_inf_nan=False,
        description="Largest refill rate (tokens per second) a model may assign.",
    )
    model_min_capacity: float = Field(
        default=1.0,
        ge=0,
        allow_inf_nan=False,
        description="Smallest capacity a model may assign: below one token a bucket denies "
        "every request of cost 1.",
    )
    model_min_refill_rate: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="Smallest refill rate (tokens per second) a model may assign.",
    )

    # -- the learned policy in the service (openclaw serve) ------------------------------
    policy_mode: Literal["static", "model"] = Field(
        default="static",
        description="Where limits come from: static (the policy file's tiers and clients) or "
        "model (the registry's champion predicts each active client's bucket at every window "
        "boundary; clients without history, or all of them while the registry has no champion, "
        "get their tier's limits from the policy file).",
    )
    policy_close_delay_s: float = Field(
        default=2.0,
        ge=0,
        description="How long after a window's end the service closes it and predicts: events "
        "reach the online features through the telemetry queue, up to "
        "telemetry_flush_interval_s after they happen, and a late event is left out.",
    )
    governor_enabled: bool = Field(
        default=True,
        description="Policy model only: scale every bucket by an AIMD multiplier driven by the "
        "backend health the ingested telemetry shows (p99 latency vs slo_p99_ms, 5xx share vs "
        "slo_error_rate).",
    )
    governor_interval_s: float = Field(
        default=1.0, gt=0, description="How often the governor judges the backend's health."
    )
    governor_decrease: float = Field(
        default=0.5, gt=0, lt=1, description="Multiplicative decrease per unhealthy interval."
    )
    governor_increase: float = Field(
        default=0.02, gt=0, le=1, description="Additive recovery per healthy interval."
    )
    governor_floor: float = Field(
        default=0.05, gt=0, le=1, description="The smallest multiplier the governor applies."
    )
    governor_hot_grace: int = Field(
        default=2,
        ge=0,
        description="Unhealthy intervals in a row that shrink only the clients above their "
        "predicted envelope, before everyone's bucket shrinks too.",
    )

    # -- the model canary (openclaw canary; DESIGN.md "Rollout") ---------------------------
    canary_auto_start: bool = Field(
        default=True,
        description="Policy model only: start a canary (shadow first) when the registry's "
        "challenger alias names a new version.",
    )
    canary_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="Time between two canary analyses; each weight step lasts one. At least "
        "window_s, or some analyses would have no model health to judge (a failure).",
    )
    canary_shadow_intervals: int = Field(
        default=2, ge=0, description="Passing analyses in shadow before the canary serves anyone."
    )
    canary_step_weight: float = Field(
        default=10.0, gt=0, le=100, description="Percent of clients added per passing analysis."
    )
    canary_max_weight: float = Field(
        default=50.0,
        gt=0,
        le=100,
        description="The canary's largest slice (percent); an analysis passing there promotes.",
    )
    canary_threshold: int = Field(
        default=5,
        ge=1,
        description="Failed analyses (in total, not in a row; no data counts as failed) that "
        "roll the canary back.",
    )
    canary_max_latency_s: float = Field(
        default=0.2, gt=0, description="Largest p99 decision latency an analysis passes."
    )
    canary_max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Largest share of store errors an analysis passes."
    )
    canary_max_underflow_rate: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Largest share of clients within their history whose challenger bucket "
        "could not serve their window.",
    )
    canary_max_prediction_error: float = Field(
        default=2.0,
        gt=0,
        description="Largest median |log(predicted / realised)| of what a bucket admits in a "
        "window, over clients within their history.",
    )

    # -- training (openclaw train) -------------------------------------------------------
    train_days: float = Field(
        default=30.0,
        gt=0,
        description="`openclaw train` uses the last this many days of the telemetry store.",
    )
    train_quantile: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="Quantile of the pinball loss the network is trained with: above 0.5 an "
        "under-allocation costs more than an over-allocation of the same size.",
    )
    train_coverage: float = Field(
        default=0.95,
        gt=0,
        lt=1,
        description="Calibration target: the share of (client, next window) pairs of the "
        "held-out slice whose calibrated bucket admits the whole window.",
    )
    train_epochs: int | None = Field(
        default=None,
        gt=0,
        description="Passes over the training rows; unset: enough for about 2000 optimiser "
        "steps, between 5 and 200 passes.",
    )
    train_batch_size: int = Field(
        default=1024,
        gt=0,
        description="Rows per optimiser step (fewer on small data sets: at least 16 steps a pass).",
    )
    train_learning_rate: float = Field(default=1e-3, gt=0, description="Adam's step size.")
    train_patience: int = Field(
        default=20,
        gt=0,
        description="Training stops after this many passes without a better validation loss "
        "(the best pass's weights are kept either way).",
    )
    train_min_rate_factor: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Lowest refill-rate factor the calibration may choose. The least "
        "over-allocation per window is found at ever lower rates with ever larger "
        "capacities (a per-window quota); buckets that persist across windows need a rate "
        "near the client's sustained one, so the rate is not cut below this share of the "
        "predicted one.",
    )
    train_hidden: tuple[int, ...] = Field(
        default=(64, 64),
        description="Widths of the network's hidden layers (ReLU between them).",
    )
    train_seed: int = Field(
        default=0,
        ge=0,
        description="Seed of the weights' initialisation and the row shuffling: the same data "
        "and seed give the same weights, byte for byte.",
    )
    train_threads: int = Field(
        default=1,
        gt=0,
        description="CPU threads torch trains with. The weights are reproducible for a given "
        "thread count (a different split of a sum rounds differently).",
    )
    train_validation_fraction: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="Share of the (time-ordered) pairs held out after the training rows to "
        "choose the epoch and calibrate.",
    )
    train_test_fraction: float = Field(
        default=0.15,
        ge=0,
        lt=1,
        description="Share of the pairs, the latest ones, held out to report metrics on data "
        "that neither trained nor calibrated the model (0: none).",
    )

    # -- evaluation: the backend's SLO and the validation gate (openclaw simulate/validate) --
    slo_p99_ms: float = Field(
        default=200.0,
        gt=0,
        description="The SLO's latency bound: a second whose completed requests have a p99 "
        "latency above it is an SLO-violation second (the governor steers by it too).",
    )
    slo_error_rate: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="The SLO's error bound: a second in which a larger share of the completed "
        "requests failed (5xx) is an SLO-violation second.",
    )
    gate_trace: Path = Field(
        default=Path("../shared/data/traces/nasa_19950801.tsv"),
        description="The trace `openclaw validate` replays when given no --trace (relative to "
        "the working directory).",
    )
    gate_tolerance: float = Field(
        default=0.005,
        ge=0,
        description="How much worse than the baseline a candidate may be before the gate "
        "fails it: on a share (legitimate requests throttled, abuse admitted, ...) in absolute "
        "terms (0.005: half a percentage point), on goodput relative to the baseline's.",
    )
    gate_tolerance_slo_s: float = Field(
        default=10.0,
        ge=0,
        description="How many more SLO-violation seconds than the baseline a candidate may have.",
    )
    gate_max_legit_throttled: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Absolute bound of the gate: the most legitimate requests (share) a "
        "candidate may throttle in any scenario, whatever the baseline does.",
    )
    gate_max_abuse_admitted: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Absolute bound of the gate: the most abusive requests (share) a candidate "
        "may admit in any scenario with abuse.",
    )
    gate_max_slo_violation_s: float = Field(
        default=1800.0,
        ge=0,
        description="Absolute bound of the gate: the most SLO-violation seconds a candidate may "
        "cause in any scenario's evaluated part.",
    )

    # -- the retraining pipeline (openclaw pipeline) ------------------------------------------
    pipeline_gate_baseline: str = Field(
        default="persistence+gov",
        description="What the pipeline's gate compares a new model with while the registry has "
        "no champion (afterwards: the champion): a policy as `openclaw validate --baseline` "
        "takes it. persistence+gov is the model's key ablation, the same information without "
        "learning.",
    )
    pipeline_service_url: str | None = Field(
        default=None,
        description="Base URL of the service whose admin API the pipeline's canary step also "
        "calls (with OPENCLAW_ADMIN_TOKEN); unset: the step only sets the challenger alias, "
        "which the service follows by itself.",
    )
    pipeline_image_builder: Path | None = Field(
        default=None,
        description="Script the package step runs as BUILDER --model DIR --tag IMAGE:VERSION "
        "(needs buildah on PATH); unset: scripts/build-image of the checkout.",
    )
    pipeline_image_name: str = Field(
        default="openclaw",
        min_length=1,
        pattern=r"^[a-z0-9][a-z0-9._/:-]*$",
        description="Image the package step tags, as NAME:MODEL_VERSION (a registry prefix may "
        "be part of NAME, e.g. ghcr.io/acme/openclaw).",
    )

    @model_validator(mode="after")
    def _canary_sees_windows(self) -> Settings:
        # An analysis judges the model health gathered at window boundaries: an interval
        # shorter than a window would sometimes see none, and no data fails the canary.
        if self.policy_mode == "model" and self.canary_interval_s < self.window_s:
            raise ValueError(
                f"canary_interval_s ({self.canary_interval_s:g}) must be at least window_s "
                f"({self.window_s:g}): an analysis needs a window boundary to judge the model by"
            )
        return self
