"""LearnedPolicy on real artifacts in a real registry, driven by a FakeClock: predictions
applied at the boundary, tier defaults for the rest, model and tier bounds, the governor,
prediction_error, and the tier bounds' validation."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from openclaw.clock import FakeClock
from openclaw.errors import ConfigError
from openclaw.features.online import OnlineFeatures
from openclaw.limiter.core import BucketParams, refill_and_take
from openclaw.model import Registry
from openclaw.policy.base import Policy
from openclaw.policy.governor import scale_bucket
from openclaw.policy.learned import (
    ERROR_BUCKETS,
    SOURCE_MODEL,
    SOURCE_OVERRIDE,
    SOURCE_TIER,
    BackendHealth,
    LearnedPolicy,
    LearnedTable,
    scale,
)
from openclaw.policy.static import PolicyHolder, StaticPolicy
from openclaw.settings import Settings
from openclaw.telemetry.events import Event, EventBatch
from openclaw.testing.models import build_artifact

W = 60.0
#: A window start: every test's traffic is in window K, its boundary at T0 + W.
T0 = 29_233_333 * W
K = int(T0 // W)

POLICY = b"""
default_tier = "free"

[tiers.free]
limits = [{ capacity = 7, refill_rate = 0.5 }]
bounds = { min_capacity = 3, max_capacity = 40, min_refill_rate = 0.2, max_refill_rate = 2 }

[tiers.free.routes."/login"]
limits = [{ capacity = 2, refill_rate = 0.1 }]

[tiers.pro]
limits = [{ capacity = 500, refill_rate = 50 }]

[clients.acme]
tier = "pro"

[clients.blocked]
limits = [{ capacity = 0, refill_rate = 0 }]
"""


def settings_for(root: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "window_s": W,
        "label_horizon_s": 10.0,
        "policy_mode": "model",
        "policy_close_delay_s": 2.0,
        "model_registry_path": root / "models",
        "governor_interval_s": 1.0,
        "slo_p99_ms": 200.0,
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


def register(registry: Registry, tmp: Path, seed: int) -> str:
    built = build_artifact(tmp / f"build{seed}" / "model-20250801", seed=seed)
    return registry.register(built.directory)


def events(client: str, n: int, *, start: float, spread: float, rt: float = 20.0) -> EventBatch:
    ts = start + np.linspace(0.0, spread, n)
    return EventBatch.from_events(
        [
            Event(f"{client}-{start}-{i}", client, int(t * 1e6), 200, rt)
            for i, t in enumerate(ts.tolist())
        ]
    )


class Fixture:
    def __init__(self, tmp: Path, **extra: object) -> None:
        self.settings = settings_for(tmp, **extra)
        policy_file = tmp / "policy.toml"
        policy_file.write_bytes(POLICY)
        self.static = PolicyHolder.from_file(policy_file)
        self.registry = Registry(self.settings.model_registry_path, user="test")
        self.metrics = CollectorRegistry()
        self.clock = FakeClock(T0 + 5.0)
        self.online = OnlineFeatures(self.settings)
        self.tmp = tmp

    def policy(self) -> LearnedPolicy:
        return LearnedPolicy.from_settings(
            self.settings, self.static, self.online, metrics=self.metrics, clock=self.clock
        )


def traffic(policy: LearnedPolicy, batch: EventBatch) -> None:
    """What the telemetry worker thread does with an accepted batch."""
    for observer in policy.observers:
        observer.observe(batch)


def to_boundary(clock: FakeClock, policy: LearnedPolicy) -> None:
    """Past window K's end and the close delay, then tick."""
    clock.advance(T0 + W + policy.close_delay_s - clock.now)
    policy.tick()


def test_predictions_apply_after_the_boundary_and_unseen_clients_get_the_tier_default(
    tmp_path: Path,
) -> None:
    f = Fixture(tmp_path, model_max_capacity=1e6, model_max_refill_rate=1e5)
    v1 = register(f.registry, tmp_path, 1)
    f.registry.promote(v1, reason="test")
    policy = f.policy()
    assert isinstance(policy, Policy)
    assert isinstance(policy.current, Policy)
    assert policy.current.model_version == v1
    assert policy.current.window is None
    traffic(policy, events("alice", 30, start=T0 + 1, spread=20))
    traffic(policy, events("acme", 200, start=T0 + 2, spread=40))
    traffic(policy, events("blocked", 5, start=T0 + 3, spread=4))

    # Before the boundary (and within the close delay after it) nothing is learned yet.
    policy.tick()
    f.clock.advance(T0 + W + 1.0 - f.clock.now)
    policy.tick()
    assert policy.current.limits_for("alice") == (BucketParams(7, 0.5),)
    assert policy.current.learned == {}

    to_boundary(f.clock, policy)
    table = policy.current
    assert isinstance(table, LearnedTable)
    assert table.window == K + 1
    assert table.name == "model"
    assert table.version == v1
    frame = f.online.rows_for(K)
    model = policy.models.model
    assert model is not None
    predicted = model.predict_batch(frame)
    rows = {c: predicted[i] for i, c in enumerate(frame.client_id.tolist())}
    # alice (tier free): clipped into the free tier's bounds.
    cap, rate = rows["alice"]
    want = BucketParams(float(np.clip(cap, 3, 40)), float(np.clip(rate, 0.2, 2)))
    assert table.limits_for("alice") == (want,)
    # acme (tier pro, no bounds): the model's bucket as is.
    assert table.limits_for("acme") == (
        BucketParams(float(rows["acme"][0]), float(rows["acme"][1])),
    )
    assert table.learned["acme"].model_version == v1
    assert table.learned["acme"].window == K + 1
    # A client's own limits win; a route with limits of its own keeps them; unseen: tier.
    assert table.limits_for("blocked") == (BucketParams(0, 0),)
    assert "blocked" not in table.learned
    assert table.limits_for("alice", route="/login") == (BucketParams(2, 0.1),)
    assert table.limits_for("alice", route="/other") == (want,)
    assert table.limits_for("newcomer") == (BucketParams(7, 0.5),)
    assert table.tier_of("acme") == "pro"

    described = table.describe("alice")
    assert described["source"] == SOURCE_MODEL
    assert described["model_version"] == v1
    start = dt.datetime.fromtimestamp((K + 1) * W, dt.UTC)
    assert described["window"] == {
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": (start + dt.timedelta(seconds=W)).isoformat().replace("+00:00", "Z"),
    }
    assert described["predicted"] == {"capacity": want.capacity, "refill_rate": want.refill_rate}
    assert table.describe("newcomer")["source"] == SOURCE_TIER
    assert table.describe("newcomer")["model_version"] is None
    assert table.describe("blocked")["source"] == SOURCE_OVERRIDE
    assert table.describe("alice", route="/login")["source"] == SOURCE_TIER
    assert f.metrics.get_sample_value("openclaw_policy_windows_total") == 1.0

    # The next window: alice silent, so she is back to her tier's default.
    traffic(policy, events("acme", 50, start=T0 + W + 3, spread=30))
    f.clock.advance(W)
    policy.tick()
    following = policy.current
    assert following.window == K + 2
    assert following.limits_for("alice") == (BucketParams(7, 0.5),)
    assert "acme" in following.learned


def test_model_caps_and_floors_then_tier_bounds(tmp_path: Path) -> None:
    f = Fixture(tmp_path, model_max_capacity=5.0, model_min_capacity=4.0, model_max_refill_rate=0.3)
    f.registry.promote(register(f.registry, tmp_path, 2), reason="test")
    policy = f.policy()
    for i, client in enumerate(("acme", "alice", "bob")):
        traffic(policy, events(client, 10 + 40 * i, start=T0 + 1, spread=30))
    to_boundary(f.clock, policy)
    table = policy.current
    (acme,) = table.limits_for("acme")  # pro: no tier bounds, the model's [4, 5] x [0, 0.3]
    assert 4.0 <= acme.capacity <= 5.0
    assert 0.0 <= acme.refill_rate <= 0.3
    for client in ("alice", "bob"):  # free: the tier's min_refill_rate 0.2 still holds
        (p,) = table.limits_for(client)
        assert 4.0 <= p.capacity <= 5.0
        assert 0.2 <= p.refill_rate <= 0.3


def test_without_a_champion_the_static_policy_serves_and_says_so(tmp_path: Path) -> None:
    f = Fixture(tmp_path)
    policy = f.policy()
    traffic(policy, events("alice", 30, start=T0 + 1, spread=20))
    to_boundary(f.clock, policy)
    table = policy.current
    assert table.name == "static"
    assert table.model_version is None
    assert table.version == f.static.current.version
    assert table.limits_for("alice") == (BucketParams(7, 0.5),)
    status = policy.status()
    assert status["serving"] is None
    assert "serving the static policy" in status["detail"]

    # A champion arrives: the admin reload loads it and predicts the last window again.
    v1 = register(f.registry, tmp_path, 1)
    f.registry.promote(v1, reason="first model")
    assert policy.reload() is None
    assert policy.current.version == v1
    assert policy.current.learned["alice"].model_version == v1
    assert "detail" not in policy.status()


def test_prediction_error_is_observed_per_model_version(tmp_path: Path) -> None:
    f = Fixture(tmp_path, model_max_capacity=1e6, model_max_refill_rate=1e5)
    v1 = register(f.registry, tmp_path, 1)
    f.registry.promote(v1, reason="test")
    policy = f.policy()
    traffic(policy, events("alice", 30, start=T0 + 1, spread=20))
    traffic(policy, events("bob", 30, start=T0 + 1, spread=20))
    to_boundary(f.clock, policy)
    predicted = policy.current.learned["alice"].predicted
    # Window K+1: alice active (realised need known), bob silent (not counted).
    traffic(policy, events("alice", 12, start=T0 + W + 1, spread=5))
    f.clock.advance(W)
    policy.tick()
    frame = f.online.rows_for(K + 1)
    assert frame.client_id.tolist() == ["alice"]
    want = math.log(predicted.capacity / float(frame.b_star[0]))
    labels = {"model_version": v1, "param": "capacity"}
    assert f.metrics.get_sample_value("openclaw_prediction_error_count", labels) == 1.0
    assert bucket_of(f.metrics, labels) == bucket_index(want)
    rate_labels = {"model_version": v1, "param": "refill_rate"}
    rate_error = math.log(predicted.refill_rate / float(frame.r_star[0]))
    assert bucket_of(f.metrics, rate_labels) == bucket_index(rate_error)


def bucket_index(value: float) -> int:
    """Which histogram bucket (index into ERROR_BUCKETS, or len for +Inf) holds value."""
    return next((i for i, le in enumerate(ERROR_BUCKETS) if value <= le), len(ERROR_BUCKETS))


def bucket_of(metrics: CollectorRegistry, labels: dict[str, str]) -> int:
    """The bucket of the single observation of a prediction_error series."""
    bounds = [*ERROR_BUCKETS, math.inf]
    cumulative = [
        metrics.get_sample_value("openclaw_prediction_error_bucket", {**labels, "le": _le(bound)})
        for bound in bounds
    ]
    return next(i for i, c in enumerate(cumulative) if c == 1.0)


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(float(bound))


def test_the_governor_shrinks_hot_clients_first_then_everyone_and_recovers(tmp_path: Path) -> None:
    f = Fixture(tmp_path, model_max_capacity=10.0, model_max_refill_rate=0.5)
    f.registry.promote(register(f.registry, tmp_path, 1), reason="test")
    policy = f.policy()
    for client in ("acme", "calm"):
        traffic(policy, events(client, 20, start=T0 + 1, spread=30))
    to_boundary(f.clock, policy)
    base_acme = policy.current.limits_for("acme")[0]
    base_calm = policy.current.limits_for("calm")[0]
    tier = policy.current.limits_for("newcomer")[0]
    assert policy.current.multiplier == 1.0

    # Window K+1: acme floods (far above b + r t), calm does not; the backend is slow.
    now = f.clock.now
    traffic(policy, events("acme", 400, start=now - 1.0, spread=0.5, rt=900.0))
    traffic(policy, events("calm", 1, start=now - 0.5, spread=0.0, rt=900.0))
    f.clock.advance(1.0)
    policy.tick()
    table = policy.current
    assert table.hot == frozenset({"acme"})
    assert table.limits_for("acme") == (scale(base_acme, 0.5),)
    assert table.limits_for("calm") == (base_calm,)  # hot clients first
    assert table.limits_for("newcomer") == (tier,)
    assert table.describe("acme")["governor"] == 0.5
    assert f.metrics.get_sample_value("openclaw_governor_multiplier", {"scope": "hot"}) == 0.5

    # Unhealthy past the grace (2 intervals in a row): everyone shrinks.
    for _ in range(2):
        # From a client without a learned bucket: calm stays within its envelope.
        traffic(policy, events("newcomer", 10, start=f.clock.now - 0.5, spread=0.1, rt=900.0))
        f.clock.advance(1.0)
        policy.tick()
    table = policy.current
    assert table.multiplier == 0.5
    assert table.limits_for("calm") == (scale(base_calm, 0.5),)
    assert table.limits_for("newcomer") == (scale(tier, 0.5),)
    assert table.limits_for("acme") == (scale(base_acme, 0.125),)
    assert table.limits_for("acme")[0].refill_rate < base_acme.refill_rate

    # Healthy intervals (fast answers, or none): additive recovery, up to 1.
    traffic(policy, events("newcomer", 100, start=f.clock.now - 0.5, spread=0.1, rt=10.0))
    f.clock.advance(1.0)
    policy.tick()
    assert policy.current.multiplier == pytest.approx(0.52)
    for _ in range(50):  # m_hot climbs back from 0.125 by 0.02 an interval
        f.clock.advance(1.0)
        policy.tick()
    table = policy.current
    assert table.multiplier == 1.0
    assert table.hot_multiplier == 1.0
    assert table.limits_for("calm") == (base_calm,)
    assert table.limits_for("newcomer") == (tier,)


def test_five_hundreds_make_the_backend_unhealthy(tmp_path: Path) -> None:
    f = Fixture(tmp_path, governor_hot_grace=0)
    policy = f.policy()
    tier = policy.current.limits_for("x")[0]
    batch = events("x", 100, start=f.clock.now - 0.5, spread=0.2)
    batch.status_code[:5] = 503  # 5% > slo_error_rate 1%
    traffic(policy, batch)
    f.clock.advance(1.0)
    policy.tick()
    assert policy.current.limits_for("x") == (scale(tier, 0.5),)


def test_governed_capacity_never_drops_below_one_request() -> None:
    assert scale(BucketParams(10, 4), 0.05) == BucketParams(1.0, 0.2)
    assert scale(BucketParams(0.5, 4), 0.05) == BucketParams(0.5, 0.2)
    assert scale(BucketParams(10, 4), 1.0) == BucketParams(10, 4)


def test_governed_capacity_is_whole_requests() -> None:
    assert scale_bucket(40.0, 0.5, 0.05) == (2.0, 0.025)  # 40 x 0.05 is 2, not 1.999...
    assert scale_bucket(38.65, 1.0, 0.05) == (1.0, 0.05)
    assert scale_bucket(10.9, 1.0, 0.5) == (5.0, 0.5)
    assert scale_bucket(10.9, 1.0, 1.0) == (10.9, 1.0)  # not governed: as it is


def test_a_quota_cut_to_the_floor_stays_cut_while_the_multiplier_recovers() -> None:
    # A tier-default quota (the NASA manifest's): a window's capacity, a negligible refill.
    quota = (38.65, 1 / 600)
    at_floor = BucketParams(*scale_bucket(*quota, 0.05))
    states, first = refill_and_take([None], [at_floor], now=0.0, cost=1.0)
    assert first.allowed
    assert states is not None
    # A minute on, the multiplier is back at 0.8. With the cut capacity a fraction (1.93)
    # the 0.93 left plus a minute's refill made a whole token, and every client cut so far
    # came back at once; in whole requests the client is out until the window ends.
    recovered = BucketParams(*scale_bucket(*quota, 0.8))
    _, later = refill_and_take(states, [recovered], now=60.0, cost=1.0)
    assert not later.allowed


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ("{ min_capacity = 10, max_capacity = 5 }", "tiers.free.bounds: min_capacity 10 is above"),
        ("{ min_refill_rate = 3, max_refill_rate = 1 }", "tiers.free.bounds: min_refill_rate 3"),
        ("{ max_capcity = 5 }", "tiers.free.bounds.max_capcity: Extra inputs"),
        ("{ min_capacity = -1 }", "tiers.free.bounds.min_capacity: Input should be greater"),
    ],
)
def test_tier_bounds_are_validated_naming_the_key(bounds: str, message: str) -> None:
    raw = f"[tiers.free]\nlimits = [{{ capacity = 1, refill_rate = 1 }}]\nbounds = {bounds}\n"
    raw = 'default_tier = "free"\n' + raw
    with pytest.raises(ConfigError, match="policy.toml: " + message.replace(".", r"\.")):
        StaticPolicy.parse(raw.encode(), source="policy.toml", fmt="toml")


def test_backend_health_keeps_only_recent_windows_of_arrivals() -> None:
    """A healthy backend never asks for arrivals; they must not pile up window after window."""
    health = BackendHealth(slo_p99_ms=200.0, window_s=300.0)
    for k in range(50):
        health.observe(events("c", 5, start=T0 + 300.0 * k, spread=10.0))
    assert len(health._arrivals) <= 2
    assert health.arrivals(49 + int(T0 // 300)) == {"c": 5}
