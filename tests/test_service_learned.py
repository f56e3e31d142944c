"""policy_mode "model" through the real service: real artifacts in a real registry, telemetry
posted over HTTP on loopback into a DuckDB file, window boundaries from a FakeClock followed
by the service's own background task."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from openclaw.limiter.redis import bucket_key
from openclaw.model import Registry
from openclaw.model.artifact import Calibration
from openclaw.testing.learned import AUTH, T0, K, LearnedService, W, metric, wait_for
from openclaw.testing.models import build_artifact
from openclaw.testing.redis import RedisServer

POLICY = """
default_tier = "free"

[tiers.free]
limits = [{ capacity = 7, refill_rate = 0.5 }]
bounds = { min_capacity = 2, max_capacity = 3 }
"""


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def register(registry: Registry, tmp: Path, seed: int) -> str:
    built = build_artifact(tmp / f"build{seed}" / "model-20250801", seed=seed)
    return registry.register(built.directory)


class Service(LearnedService):
    def __init__(self, tmp: Path, **extra: Any) -> None:
        super().__init__(tmp, POLICY, **extra)

    def post_events(self, http: httpx.Client, client: str, n: int, *, start: float) -> None:
        self.post_ndjson(
            b"\n".join(
                orjson.dumps(
                    {
                        "client_id": client,
                        "timestamp": start + i * 0.5,
                        "response_time_ms": 20.0,
                        "status_code": 200,
                    }
                )
                for i in range(n)
            )
        )

    def boundary(self, window: int) -> None:
        """Move the fake clock past ``window``'s end and the close delay; wait for the
        service's task to publish the table for ``window + 1``."""
        learned = self.built.learned
        assert learned is not None
        self.clock.now = max(self.clock.now, (window + 1) * W + self.settings.policy_close_delay_s)
        wait_for(lambda: learned.current.window == window + 1)


def promote_with_defaults(service: Service) -> str:
    """Register and promote a model whose manifest carries policy defaults: a tier default of
    4 requests and an unhealthy one of 2, each refilling at 0.001/s."""
    defaults = {
        "tier_default": {"capacity": 4.0, "refill_rate": 0.001},
        "unhealthy_default": {"capacity": 2.0, "refill_rate": 0.001},
    }
    built = build_artifact(
        service.tmp / "defaults" / "model-20250801",
        seed=1,
        calibration=Calibration(
            method="quantile-factor",
            factors={"capacity": 1.2, "refill_rate": 1.1},
            coverage=0.99,
            details={"policy_defaults": defaults},
        ),
    )
    version = service.registry.register(built.directory)
    service.registry.promote(version, reason="test")
    return version


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, enforce=True, model_max_refill_rate=0.01)
    yield svc
    svc.stop()


def test_predictions_serve_after_the_boundary_with_their_model_version(service: Service) -> None:
    v1 = register(service.registry, service.tmp, 1)
    service.registry.promote(v1, reason="test")
    http = service.start()
    ready = http.get("/readyz").json()
    assert ready["model"]["serving"] == v1
    assert ready["policy"] == {"name": "model", "version": v1}
    before = http.get("/api/v1/params/alice").json()
    assert before["source"] == "tier_default"
    assert before["model_version"] is None
    assert before["limits"][0]["capacity"] == 7

    service.post_events(http, "alice", 40, start=T0 + 1)
    service.boundary(K)
    params = http.get("/api/v1/params/alice").json()
    assert params["source"] == "model"
    assert params["model_version"] == v1
    assert params["policy"] == {"name": "model", "version": v1}
    assert params["window"] == {"start": iso((K + 1) * W), "end": iso((K + 2) * W)}
    (limit,) = params["limits"]
    # The tier's bounds [2, 3] and the model's refill cap 0.01 hold, whatever was predicted.
    assert 2.0 <= limit["capacity"] <= 3.0
    assert limit["refill_rate"] <= 0.01
    assert params["predicted"] == {
        "capacity": limit["capacity"],
        "refill_rate": limit["refill_rate"],
    }
    assert http.get("/api/v1/params/bob").json()["source"] == "tier_default"

    # Decisions on the learned bucket: a few allowed, then 429 on an empty bucket.
    codes = [http.get("/api/v1/rate", params={"client_id": "alice"}).status_code for _ in range(5)]
    assert codes.count(200) == int(limit["capacity"])
    assert codes[-1] == 429
    text = http.get("/metrics").text
    labels = {"policy": "model", "model_version": v1}
    assert metric(text, "openclaw_decisions_total", {**labels, "result": "allowed"}) == int(
        limit["capacity"]
    )
    assert metric(text, "openclaw_bucket_underflow_total", labels) == 5 - int(limit["capacity"])

    # Window K+1 (alice active) closes: its prediction error is observed under v1.
    service.post_events(http, "alice", 10, start=(K + 1) * W + 1)
    service.boundary(K + 1)
    text = http.get("/metrics").text
    for param in ("capacity", "refill_rate"):
        count = metric(
            text, "openclaw_prediction_error_count", {"model_version": v1, "param": param}
        )
        assert count == 1.0
    assert metric(text, "openclaw_policy_windows_total", {}) == 2.0


def test_without_a_champion_the_service_serves_the_static_policy_and_says_so(
    service: Service,
) -> None:
    http = service.start()
    ready = http.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["policy"]["name"] == "static"
    assert body["model"]["serving"] is None
    assert "serving the static policy" in body["model"]["detail"]
    service.post_events(http, "alice", 10, start=T0 + 1)
    service.boundary(K)
    params = http.get("/api/v1/params/alice").json()
    assert params["source"] == "tier_default"
    assert params["limits"][0]["capacity"] == 7

    # A champion promoted later is picked up at the admin reload.
    v1 = register(service.registry, service.tmp, 1)
    service.registry.promote(v1, reason="first")
    answer = http.post("/api/v1/admin/reload", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json()["policy"] == {"name": "model", "version": v1}
    assert http.get("/api/v1/params/alice").json()["model_version"] == v1


def test_hot_reload_under_steady_requests_never_fails_one(tmp_path: Path) -> None:
    svc = Service(tmp_path)  # enforce off: a denial is a 200 too, so only failures show
    try:
        v1 = register(svc.registry, tmp_path, 1)
        v2 = register(svc.registry, tmp_path, 2)
        svc.registry.promote(v1, reason="test")
        http = svc.start()
        svc.post_events(http, "alice", 40, start=T0 + 1)
        svc.boundary(K)

        learned = svc.built.learned
        assert learned is not None
        stop = threading.Event()
        statuses: list[int] = []
        versions: set[str] = set()

        def steady() -> None:
            with httpx.Client(base_url=str(http.base_url), timeout=10.0) as client:
                while not stop.is_set():
                    for path in ("/api/v1/rate?client_id=alice", "/api/v1/params/alice"):
                        answer = client.get(path)
                        statuses.append(answer.status_code)
                        if answer.status_code == 200:
                            versions.add(answer.json()["policy"]["version"])

        worker = threading.Thread(target=steady)
        worker.start()
        try:
            for i in range(6):
                target = v2 if i % 2 == 0 else v1
                svc.registry.promote(target, reason=f"swap {i}")
                if i < 3:  # through the admin endpoint ...
                    answer = http.post("/api/v1/admin/reload", headers=AUTH)
                    assert answer.status_code == 200, answer.text
                else:  # ... or at the next boundary, where the service checks the alias
                    svc.post_events(http, "alice", 20, start=(K + i - 2) * W + 1)
                    svc.boundary(K + i - 2)
                wait_for(lambda t=target: learned.current.version == t)  # type: ignore[misc]
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join()
        assert len(statuses) > 50
        assert {s for s in statuses if s != 200} == set()
        assert versions == {v1, v2}
        assert http.get("/api/v1/params/alice").json()["model_version"] == v1  # the last swap
        text = http.get("/metrics").text
        assert metric(text, "openclaw_model_reloads_total", {}) == 7.0
    finally:
        svc.stop()


def test_a_corrupt_champion_keeps_the_old_model_serving(service: Service) -> None:
    v1 = register(service.registry, service.tmp, 1)
    bad = register(service.registry, service.tmp, 2)
    service.registry.promote(v1, reason="good")
    http = service.start()
    service.post_events(http, "alice", 40, start=T0 + 1)
    service.boundary(K)
    assert http.get("/api/v1/params/alice").json()["model_version"] == v1

    # Promotion verifies the version; it is corrupted after (a disk error, a hand edit).
    service.registry.promote(bad, reason="next")
    weights = service.registry.path_of(bad) / "weights.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-4] + b"\xff\xff\xff\xff")
    answer = http.post("/api/v1/admin/reload", headers=AUTH)
    assert answer.status_code == 409
    body = answer.json()
    assert f"champion {bad} could not be loaded" in body["reason"]
    assert f"still serving {v1}" in body["reason"]
    assert body["policy"] == {"name": "model", "version": v1}
    params = http.get("/api/v1/params/alice").json()
    assert params["source"] == "model"
    assert params["model_version"] == v1
    assert http.get("/api/v1/rate", params={"client_id": "alice"}).status_code == 200
    text = http.get("/metrics").text
    assert metric(text, "openclaw_model_load_failures_total", {"reason": "checksum"}) == 1.0
    # The next boundary keeps v1 too (and does not count the same failure again).
    service.post_events(http, "alice", 10, start=(K + 1) * W + 1)
    service.boundary(K + 1)
    assert http.get("/api/v1/params/alice").json()["model_version"] == v1
    assert http.get("/readyz").json()["model"]["serving"] == v1


def test_a_models_defaults_serve_and_its_buckets_start_full_at_every_window(
    service: Service,
) -> None:
    """The rules of policy/rules.py in the service: the default bucket the manifest carries
    for clients without a prediction, the floor and quota shape, and buckets keyed by window
    (a drained bucket that refills at 0.001/s is full again at the next boundary)."""
    version = promote_with_defaults(service)
    http = service.start()

    def codes(client: str, n: int) -> list[int]:
        return [
            http.get("/api/v1/rate", params={"client_id": client}).status_code for _ in range(n)
        ]

    bob = http.get("/api/v1/params/bob").json()
    assert bob["source"] == "model_default"
    assert bob["model_version"] == version
    assert [(lim["capacity"], lim["refill_rate"]) for lim in bob["limits"]] == [(4.0, 0.001)]
    assert codes("bob", 5) == [200] * 4 + [429]

    service.post_events(http, "alice", 40, start=T0 + 1)
    service.boundary(K)
    alice = http.get("/api/v1/params/alice").json()
    assert alice["source"] == "model"
    (limit,) = alice["limits"]
    # Floor (at least the default's 4 + 0.06), quota shape, then the tier's bounds [2, 3].
    assert limit["capacity"] == 3.0
    assert limit["refill_rate"] == 0.001
    assert codes("alice", 4) == [200] * 3 + [429]
    # bob's default bucket is a new one in the new window: full again.
    assert codes("bob", 5) == [200] * 4 + [429]
    # Denied, bob would wait 1,000 s for a token at 0.001/s; the window's fresh bucket is due
    # in 60 s (the next table, one window after this one): the answers say so.
    denied = http.get("/api/v1/rate", params={"client_id": "bob"})
    assert denied.status_code == 429
    assert denied.headers["Retry-After"] == "60"
    assert denied.json()["retry_after"] == pytest.approx(W)
    batch = http.post("/api/v1/rate/batch", json={"requests": [{"client_id": "bob"}]})
    (decision,) = batch.json()["decisions"]
    assert (decision["allowed"], decision["retry_after"]) == (False, pytest.approx(W))

    service.post_events(http, "alice", 40, start=(K + 1) * W + 1)
    service.boundary(K + 1)
    assert codes("alice", 4) == [200] * 3 + [429]  # full again, though it refills at 0.001/s


def test_window_keys_are_kept_two_windows_in_redis_not_until_refilled(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A model's buckets are keyed by window; Redis is told to keep such a key two windows
    (``LearnedTable.bucket_of``), not the hours its quota would take to refill."""
    service = Service(tmp_path, enforce=True, store_url=redis_server.url)
    promote_with_defaults(service)  # the tier default refills a token in 1,000 s
    try:
        http = service.start()
        service.boundary(K)  # keys are per window from the first boundary on
        window = K + 1
        for _ in range(3):
            assert http.get("/api/v1/rate", params={"client_id": "bob"}).status_code == 200
        batch = http.post("/api/v1/rate/batch", json={"requests": [{"client_id": "carol"}]})
        assert batch.status_code == 200
        for who in ("bob", "carol"):
            pttl = int(redis_server.command("PTTL", bucket_key("oc", f"{who}@{window}")))
            assert 0 < pttl <= 2 * W * 1000, (who, pttl)  # without: (4 - 1) / 0.001 s
    finally:
        service.stop()
