"""The Rating API over real HTTP on loopback, with the memory store and a real redis-server."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from openclaw.limiter import BucketStore, create_store
from openclaw.policy.static import PolicyHolder
from openclaw.service.app import create_app
from openclaw.service.openapi import openapi_spec
from openclaw.service.server import BackgroundServer
from openclaw.settings import Settings
from openclaw.testing.redis import RedisServer

# Refill so slow that no test sees a token come back: decisions are deterministic.
POLICY = """
default_tier = "free"

[tiers.free]
limits = [{ capacity = 5, refill_rate = 0.001 }]

[tiers.free.routes."/search"]
limits = [{ capacity = 2, refill_rate = 0.001 }]

[tiers.pro]
limits = [{ capacity = 5000, refill_rate = 1000 }]

[clients.acme]
tier = "pro"

[clients.layered]
limits = [{ capacity = 100, refill_rate = 0.001 }, { capacity = 3, refill_rate = 0.001 }]
"""

TOKEN = "s3cret-token"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


@contextmanager
def serving(settings: Settings) -> Iterator[httpx.Client]:
    store: BucketStore = create_store(settings)
    holder = PolicyHolder.from_file(settings.policy_path)
    app = create_app(settings, store, holder, CollectorRegistry(), on_shutdown=[store.aclose])
    with (
        BackgroundServer(app, settings) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        yield client


@pytest.fixture
def client(store_url: str, policy_file: Path) -> Iterator[httpx.Client]:
    with serving(Settings(store_url=store_url, policy_path=policy_file)) as c:
        yield c


def new_id() -> str:
    """A client id no other test uses (a session's redis-server is shared)."""
    return f"c-{uuid.uuid4().hex[:12]}"


def metric(client: httpx.Client, line_prefix: str) -> float:
    text = client.get("/metrics").text
    values = [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(line_prefix)]
    return sum(values)


# -- decisions ---------------------------------------------------------------------


def test_get_rate_answers_the_decision_and_headers(client: httpx.Client) -> None:
    cid = new_id()
    r = client.get("/api/v1/rate", params={"client_id": cid, "cost": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["allowed"] is True
    assert body["remaining"] == pytest.approx(3.0, abs=0.01)
    assert body["limit"] == 5.0
    assert body["retry_after"] == 0.0
    assert body["reset_after"] > 0
    assert body["client_id"] == cid
    assert body["tier"] == "free"
    assert body["policy"]["name"] == "static"
    assert body["policy"]["version"].startswith("sha256:")
    assert r.headers["RateLimit-Policy"] == '"free";q=5;w=5000'
    assert r.headers["RateLimit"].startswith('"free";r=3;t=')
    assert "Retry-After" not in r.headers
    assert "X-RateLimit-Limit" not in r.headers


def test_buckets_drain_and_deny_without_enforce_answer_200(client: httpx.Client) -> None:
    cid = new_id()
    allowed = [client.get("/api/v1/rate", params={"client_id": cid}) for _ in range(7)]
    assert [r.status_code for r in allowed] == [200] * 7
    assert [r.json()["allowed"] for r in allowed] == [True] * 5 + [False] * 2
    denied = allowed[-1].json()
    assert denied["retry_after"] > 900  # one token at 0.001/s
    assert denied["remaining"] < 1
    assert "Retry-After" not in allowed[-1].headers
    assert allowed[-1].headers["RateLimit"].startswith('"free";r=0;t=')
    assert metric(client, "openclaw_bucket_underflow_total{") >= 2
    assert metric(client, 'openclaw_decisions_total{model_version="sha256:') >= 7


def test_post_rate_takes_the_client_from_the_body(client: httpx.Client) -> None:
    cid = new_id()
    r = client.post("/api/v1/rate", json={"client_id": cid, "cost": 5})
    assert r.status_code == 200
    assert r.json()["remaining"] == pytest.approx(0, abs=0.01)
    r = client.post("/api/v1/rate", json={"client_id": cid})
    assert r.json()["allowed"] is False


def test_client_from_header_then_remote_address(client: httpx.Client) -> None:
    cid = new_id()
    r = client.get("/api/v1/rate", headers={"X-Client-ID": cid})
    assert r.json()["client_id"] == cid
    r = client.get("/api/v1/rate")
    assert r.json()["client_id"] == "127.0.0.1"
    # An explicit client_id wins over the header.
    r = client.get("/api/v1/rate", params={"client_id": "acme"}, headers={"X-Client-ID": cid})
    assert r.json()["tier"] == "pro"


def test_routes_have_their_own_limits_and_buckets(client: httpx.Client) -> None:
    cid = new_id()
    search = [
        client.get("/api/v1/rate", params={"client_id": cid, "route": "/search"}).json()
        for _ in range(3)
    ]
    assert [d["allowed"] for d in search] == [True, True, False]
    assert search[0]["limit"] == 2.0
    assert search[0]["route"] == "/search"
    # The client's own bucket is untouched by its /search requests.
    assert client.get("/api/v1/rate", params={"client_id": cid}).json()["remaining"] == (
        pytest.approx(4.0, abs=0.01)
    )


def test_several_limits_are_charged_together(client: httpx.Client) -> None:
    # A client's own limits apply on every route; a fresh route gives fresh buckets.
    params = {"client_id": "layered", "route": new_id()}
    decisions = [client.get("/api/v1/rate", params=params) for _ in range(4)]
    assert [r.json()["allowed"] for r in decisions] == [True, True, True, False]
    # The 3-token bucket binds, and the headers name it.
    assert decisions[0].headers["RateLimit-Policy"] == ('"free";q=100;w=100000,"free.1";q=3;w=3000')
    assert decisions[-1].headers["RateLimit"].startswith('"free.1";r=0;t=')
    # Denied: neither bucket was charged, so the 100-token one still has 97.
    wide = client.get("/api/v1/params/layered").json()["limits"]
    assert [lim["capacity"] for lim in wide] == [100.0, 3.0]


def test_enforce_mode_answers_429_with_retry_after(store_url: str, policy_file: Path) -> None:
    settings = Settings(store_url=store_url, policy_path=policy_file, enforce=True)
    with serving(settings) as client:
        cid = new_id()
        codes = [
            client.get("/api/v1/rate", params={"client_id": cid}).status_code for _ in range(6)
        ]
        assert codes == [200] * 5 + [429]
        r = client.get("/api/v1/rate", params={"client_id": cid})
        assert r.status_code == 429
        body = r.json()
        assert body["error"] == "rate_limited"
        assert body["allowed"] is False
        retry = int(r.headers["Retry-After"])
        assert retry == math.ceil(body["retry_after"])
        assert r.headers["RateLimit"] == f'"free";r=0;t={retry}'
        # A cost above the capacity can never succeed: 429 without a retry time.
        r = client.get("/api/v1/rate", params={"client_id": new_id(), "cost": 6})
        assert r.status_code == 429
        assert r.json()["retry_after"] is None
        assert "Retry-After" not in r.headers


def test_legacy_headers_behind_a_setting(store_url: str, policy_file: Path) -> None:
    settings = Settings(store_url=store_url, policy_path=policy_file, legacy_headers=True)
    with serving(settings) as client:
        r = client.get("/api/v1/rate", params={"client_id": new_id()})
        assert r.headers["X-RateLimit-Limit"] == "5"
        assert r.headers["X-RateLimit-Remaining"] == "4"
        assert int(r.headers["X-RateLimit-Reset"]) >= 1000


def test_batch_decides_in_order_with_one_store_call(client: httpx.Client) -> None:
    a, b = new_id(), new_id()
    requests: list[dict[str, Any]] = [{"client_id": a} for _ in range(6)]
    requests += [{"client_id": b, "cost": 5}, {"client_id": "acme", "cost": 100}]
    r = client.post("/api/v1/rate/batch", json={"requests": requests})
    assert r.status_code == 200
    decisions = r.json()["decisions"]
    assert [d["allowed"] for d in decisions] == [True] * 5 + [False, True, True]
    assert [d["client_id"] for d in decisions] == [a] * 6 + [b, "acme"]
    assert decisions[-1]["tier"] == "pro"
    assert client.get("/api/v1/rate", params={"client_id": b}).json()["allowed"] is False


def test_params_introspection(client: httpx.Client) -> None:
    r = client.get("/api/v1/params/acme")
    assert r.status_code == 200
    body = r.json()
    assert body["tier"] == "pro"
    assert body["limits"] == [
        {"name": "pro", "capacity": 5000.0, "refill_rate": 1000.0, "window_s": 5}
    ]
    r = client.get("/api/v1/params/someone", params={"route": "/search"})
    assert r.json()["limits"][0]["capacity"] == 2.0


# -- operations --------------------------------------------------------------------


def test_health_ready_metrics_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    client.get("/api/v1/rate", params={"client_id": new_id()})
    text = client.get("/metrics").text
    assert "openclaw_decision_latency_seconds_bucket" in text
    assert "openclaw_store_available 1.0" in text
    spec = client.get("/openapi.json").json()
    assert spec == openapi_spec()
    assert spec["openapi"].startswith("3.")


def test_openapi_documents_exactly_the_served_paths(client: httpx.Client) -> None:
    for path in openapi_spec()["paths"]:
        concrete = path.replace("{client_id}", "acme")
        for method in openapi_spec()["paths"][path]:
            r = client.request(method.upper(), concrete)
            assert r.status_code != 404, (method, path)
            assert r.status_code != 405, (method, path)


def test_readyz_is_503_while_redis_is_down(own_redis: RedisServer, policy_file: Path) -> None:
    settings = Settings(store_url=own_redis.url, policy_path=policy_file, redis_timeout_ms=50)
    with serving(settings) as client:
        assert client.get("/readyz").status_code == 200
        own_redis.kill()
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["error"] == "not_ready"
        assert "unreachable" in r.json()["reason"]
        # Fail-open (the default) keeps deciding, and the failure shows in the metrics.
        assert client.get("/api/v1/rate", params={"client_id": new_id()}).json()["allowed"]
        assert metric(client, "openclaw_store_round_trip_failures_total") >= 1
        assert "openclaw_store_available 0.0" in client.get("/metrics").text


def test_admin_reload_needs_the_token(store_url: str, policy_file: Path) -> None:
    with serving(Settings(store_url=store_url, policy_path=policy_file)) as client:
        r = client.post("/api/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 403
        assert r.json()["error"] == "admin_disabled"
    settings = Settings(store_url=store_url, policy_path=policy_file, admin_token=SecretStr(TOKEN))
    with serving(settings) as client:
        for auth in (None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"):
            headers = {"Authorization": auth} if auth else {}
            r = client.post("/api/v1/admin/reload", headers=headers)
            assert r.status_code == 401, auth
            assert r.headers["WWW-Authenticate"] == "Bearer"
        ok = {"Authorization": f"Bearer {TOKEN}"}
        before = client.get("/api/v1/params/acme").json()["policy"]["version"]
        policy_file.write_text(POLICY.replace("capacity = 5000", "capacity = 7000"))
        r = client.post("/api/v1/admin/reload", headers=ok)
        assert r.status_code == 200, r.text
        assert r.json()["reloaded"] is True
        after = client.get("/api/v1/params/acme").json()
        assert after["limits"][0]["capacity"] == 7000.0
        assert after["policy"]["version"] != before
        # A bad file keeps the policy in force and says which key is wrong.
        policy_file.write_text(POLICY.replace("refill_rate = 1000", "refil_rate = 1000"))
        r = client.post("/api/v1/admin/reload", headers=ok)
        assert r.status_code == 409
        assert "refil_rate" in r.json()["reason"]
        assert r.json()["policy"]["version"] == after["policy"]["version"]
        assert client.get("/api/v1/params/acme").json()["limits"][0]["capacity"] == 7000.0


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "expected"),
    [
        ("POST", "/api/v1/rate", {"content": b"{not json"}, (400, "invalid_json")),
        ("POST", "/api/v1/rate", {"content": b'{"cost": NaN}'}, (400, "invalid_json")),
        ("POST", "/api/v1/rate", {"content": b'{"cost": Infinity}'}, (400, "invalid_json")),
        ("POST", "/api/v1/rate", {"content": b"\xff\xfe\x00"}, (400, "invalid_json")),
        ("POST", "/api/v1/rate", {"content": b"[" * 999}, (400, "invalid_json")),
        ("POST", "/api/v1/rate", {"json": [1, 2]}, (422, "invalid_body")),
        ("POST", "/api/v1/rate", {"json": {"client_id": 12}}, (422, "invalid_field")),
        ("POST", "/api/v1/rate", {"json": {"client_id": ""}}, (422, "invalid_field")),
        ("POST", "/api/v1/rate", {"json": {"client_id": "a\nb"}}, (422, "invalid_field")),
        ("POST", "/api/v1/rate", {"json": {"client_id": "a" * 257}}, (422, "invalid_field")),
        ("POST", "/api/v1/rate", {"json": {"cost": "lots"}}, (422, "invalid_field")),
        ("POST", "/api/v1/rate", {"json": {"cost": True}}, (422, "invalid_field")),
        ("POST", "/api/v1/rate", {"json": {"cost": -1}}, (422, "invalid_cost")),
        ("POST", "/api/v1/rate", {"json": {"cost": 1e300}}, (422, "invalid_cost")),
        ("POST", "/api/v1/rate", {"json": {"clientid": "a"}}, (422, "invalid_field")),
        ("POST", "/api/v1/rate", {"json": {"route": 5}}, (422, "invalid_field")),
        # null is not "absent": it must not fall back to the remote address.
        ("POST", "/api/v1/rate", {"json": {"client_id": None}}, (422, "invalid_field")),
        (
            "POST",
            "/api/v1/rate?client_id=",
            {"json": {"client_id": "a"}},
            (422, "invalid_field"),
        ),
        ("GET", "/api/v1/params/a%0Ab", {}, (422, "invalid_field")),
        ("GET", "/api/v1/params/ab%0A", {}, (422, "invalid_field")),
        ("GET", "/api/v1/rate", {"params": {"cost": "nan"}}, (422, "invalid_cost")),
        ("GET", "/api/v1/rate", {"params": {"cost": "inf"}}, (422, "invalid_cost")),
        ("GET", "/api/v1/rate", {"params": {"cost": "-0.5"}}, (422, "invalid_cost")),
        ("GET", "/api/v1/rate", {"params": {"cost": "1e7"}}, (422, "invalid_cost")),
        ("GET", "/api/v1/rate", {"params": {"cost": "two"}}, (422, "invalid_field")),
        ("POST", "/api/v1/rate", {"content": b"x" * 2000}, (413, "body_too_large")),
        ("POST", "/api/v1/rate/batch", {"json": {}}, (422, "invalid_field")),
        ("POST", "/api/v1/rate/batch", {"json": {"requests": "a"}}, (422, "invalid_field")),
        ("POST", "/api/v1/rate/batch", {"json": {"requests": [1]}}, (422, "invalid_field")),
        (
            "POST",
            "/api/v1/rate/batch",
            {"json": {"requests": [{"client_id": None}]}},
            (422, "invalid_field"),
        ),
        (
            "POST",
            "/api/v1/rate/batch",
            {"json": {"requests": [{"cost": -2}]}},
            (422, "invalid_cost"),
        ),
        ("POST", "/api/v1/rate/batch", {"json": {"requests": [{}] * 11}}, (413, "batch_too_large")),
        ("POST", "/api/v1/rate/batch", {}, (400, "bad_request")),
        ("GET", "/api/v1/nothing", {}, (404, "not_found")),
        ("DELETE", "/api/v1/rate", {}, (405, "method_not_allowed")),
        ("GET", "/api/v1/rate/batch", {}, (405, "method_not_allowed")),
    ],
)
def test_bad_input_is_a_4xx_with_a_json_reason(
    method: str,
    path: str,
    kwargs: dict[str, Any],
    expected: tuple[int, str],
    bad_input_client: httpx.Client,
) -> None:
    status, error = expected
    r = bad_input_client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"] == error
    assert isinstance(body["reason"], str)
    assert body["reason"]


@pytest.fixture(scope="module")
def bad_input_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(POLICY)
    settings = Settings(policy_path=path, max_body_bytes=1000, max_batch=10)
    with serving(settings) as client:
        yield client


def test_a_body_streamed_past_the_limit_is_cut_off(bad_input_client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b" " * 100

    # No Content-Length (chunked): the limit holds while reading.
    r = bad_input_client.post("/api/v1/rate", content=chunks())
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large"


# -- the smoke check of the issue ---------------------------------------------------


def test_smoke_1000_sequential_decisions_then_metrics(client: httpx.Client) -> None:
    codes = [
        client.get("/api/v1/rate", params={"client_id": "acme"}).status_code for _ in range(1000)
    ]
    assert codes == [200] * 1000
    metrics = client.get("/metrics").text
    assert "latency_seconds_bucket" in metrics
    assert metric(client, 'openclaw_decision_latency_seconds_count{endpoint="rate"}') >= 1000
