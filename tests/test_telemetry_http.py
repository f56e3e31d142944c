"""Telemetry over HTTP: ``POST /api/v1/telemetry``, the middleware's events, and
``openclaw serve`` writing every accepted event on SIGTERM. Real HTTP on loopback, real
DuckDB files."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from openclaw.errors import EventRejected
from openclaw.limiter import BucketParams, MemoryStore
from openclaw.policy.static import PolicyHolder
from openclaw.service.app import create_app
from openclaw.service.middleware import RateLimitMiddleware
from openclaw.service.server import BackgroundServer, close_telemetry
from openclaw.service.telemetry import MAX_REPORTED_ERRORS, parse_ndjson
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.batcher import TelemetryBatcher
from openclaw.telemetry.events import Event, validate_event
from openclaw.telemetry.stores import open_event_store
from openclaw.testing.redis import free_port

BIN = Path(sys.executable).parent
T0 = 1_700_000_000.0
NDJSON = {"Content-Type": "application/x-ndjson"}


def line(i: int, **over: Any) -> bytes:
    record: dict[str, Any] = {
        "event_id": f"ev-{i}",
        "client_id": f"client-{i % 5}",
        "timestamp": T0 + i / 1000,
        "response_time_ms": 10.0 + i,
        "status_code": 200,
        "route": "/items/{id}",
        "method": "get",
        "bytes": 100 + i,
    }
    record.update(over)
    return orjson.dumps({k: v for k, v in record.items() if v is not ...})


def body(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


# -- the parser: the inline path and validate_event agree ------------------------------------


def reference(record: object, number: int) -> Event | tuple[str, str]:
    try:
        return validate_event(record, default_event_id=f"p-{number}")
    except EventRejected as exc:
        return exc.reason, exc.detail


def parsed(raw: bytes) -> list[Event | tuple[str, str]]:
    result = parse_ndjson(raw, max_client_id_length=256, id_prefix="p-")
    out: list[Event | tuple[str, str]] = list(result.batch.events())
    out += [(r.reason, r.detail) for r in result.rejections]
    return out


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.sampled_from(["2024-05-01T12:00:00.5+00:00", "2024-05-01T12:00:00", "GET", ""]),
    st.just("x" * 300),
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(max_size=4), values),
        "client_id": st.one_of(st.text(min_size=1, max_size=4), values),
        "timestamp": st.one_of(
            st.floats(min_value=6.2e8, max_value=4.2e9),
            st.integers(600_000_000, 4_200_000_000),
            # Finite, but infinite once in microseconds (schemathesis found this 500).
            st.sampled_from([5e306, -1e16, 1.7e308, 631_151_999.9999996, 4_102_444_800.0000004]),
            values,
        ),
        "response_time_ms": st.one_of(st.floats(-1, 9e7), st.integers(-1, 90_000_000), values),
        "status_code": st.one_of(st.integers(90, 610), values),
        "route": values,
        "method": values,
        "bytes": st.one_of(st.integers(-1, 2**62 + 1), values),
        "extra": values,
    },
)


@given(st.lists(near_valid, max_size=6))
@settings(max_examples=400, deadline=None)
def test_the_inline_path_judges_every_line_as_validate_event_does(
    records: list[dict[str, Any]],
) -> None:
    raw = b"\n".join(orjson.dumps(r) for r in records)
    expected_events: list[Event | tuple[str, str]] = []
    expected_rejections: list[Event | tuple[str, str]] = []
    for number, record in enumerate(records, 1):
        judged = reference(record, number)
        (expected_events if isinstance(judged, Event) else expected_rejections).append(judged)
    assert parsed(raw) == [*expected_events, *expected_rejections]


def test_line_numbers_count_blank_lines_and_non_objects_are_not_ndjson() -> None:
    raw = b"\n" + line(1) + b"\n\n  \nnot json\n[1, 2]\n" + line(2, status_code=700) + b"\r\n"
    result = parse_ndjson(raw, max_client_id_length=256, id_prefix="p-")
    assert list(result.batch.event_id) == ["ev-1"]
    assert [(r.line, r.reason) for r in result.rejections] == [
        (5, "bad_json"),
        (6, "bad_json"),
        (7, "out_of_range"),
    ]
    assert "array" in result.rejections[1].detail
    assert result.objects == 2
    garbage = parse_ndjson(b"[1]\nnope\n", max_client_id_length=256, id_prefix="p-")
    assert garbage.objects == 0


# -- the endpoint over HTTP -----------------------------------------------------------------


Served = tuple[httpx.Client, TelemetryBatcher, EventStore, CollectorRegistry]


@contextmanager
def serving(tmp_path: Path, **overrides: Any) -> Iterator[Served]:
    settings_ = Settings(
        telemetry_batch_size=overrides.pop("batch_size", 100_000),
        telemetry_flush_interval_s=overrides.pop("flush_interval_s", 60.0),
        **overrides,
    )
    event_store = open_event_store(f"duckdb://{tmp_path / 'events.duckdb'}", settings=settings_)
    registry = CollectorRegistry()
    batcher = TelemetryBatcher.from_settings(event_store, settings_, registry).start()
    store = MemoryStore()

    async def close_queue() -> None:
        await asyncio.to_thread(close_telemetry, batcher, event_store, timeout_s=10)

    app = create_app(
        settings_,
        store,
        PolicyHolder.from_file(None),
        registry,
        on_shutdown=[close_queue],
        telemetry=batcher,
    )
    with (
        BackgroundServer(app, settings_) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        yield client, batcher, event_store, registry


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path, telemetry_max_body_bytes=200_000) as running:
        yield running


def test_good_lines_are_accepted_and_bad_ones_named(served: Served) -> None:
    client, batcher, store, registry = served
    raw = body(
        line(1),
        line(2, event_id=...),  # no id: the server makes one up
        b"{oops",
        line(3, client_id=""),
        line(4, timestamp="2024-05-01T12:00:00.25+02:00", response_time_ms=0),
        line(5, color="red"),
        line(6, timestamp="2024-05-01T12:00:00"),
        line(7, route=None, method=None, bytes=None),
    )
    r = client.post("/api/v1/telemetry", content=raw, headers=NDJSON)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["accepted"] == 4
    assert answer["rejected"] == 4
    assert [(e["line"], e["reason"]) for e in answer["errors"]] == [
        (3, "bad_json"),
        (4, "missing_field"),
        (6, "unknown_field"),
        (7, "bad_timestamp"),
    ]
    assert "color" in answer["errors"][2]["detail"]
    assert "UTC offset" in answer["errors"][3]["detail"]
    assert batcher.flush() == 4
    got = {e.event_id: e for e in store.scan().events()}
    assert sorted(k for k in got if k.startswith("ev-")) == ["ev-1", "ev-4", "ev-7"]
    assert got["ev-1"] == Event(
        "ev-1", "client-1", round((T0 + 0.001) * 1e6), 200, 11.0, "/items/{id}", "GET", 101
    )
    assert got["ev-4"].ts_us == 1_714_557_600_250_000  # 10:00:00.25 UTC
    assert got["ev-7"] == Event("ev-7", "client-2", round((T0 + 0.007) * 1e6), 200, 17.0)
    (made_up,) = [k for k in got if not k.startswith("ev-")]
    assert made_up.endswith("-2")  # the line number
    rejected = "openclaw_telemetry_events_rejected_total"
    assert registry.get_sample_value(rejected, {"source": "http", "reason": "bad_json"}) == 1
    accepted = registry.get_sample_value(
        "openclaw_telemetry_events_accepted_total", {"source": "http"}
    )
    assert accepted == 4


def test_a_retried_body_with_ids_is_stored_once(served: Served) -> None:
    client, batcher, store, _ = served
    raw = body(*(line(i) for i in range(50)))
    for _ in range(2):
        assert client.post("/api/v1/telemetry", content=raw).json()["accepted"] == 50
        batcher.flush()
    assert store.count() == 50


def test_not_ndjson_is_400_and_errors_are_capped(served: Served) -> None:
    client, _, _, _ = served
    for raw in (b"", b"\n\n", b"hello\n", b'[{"client_id": "a"}]'):
        r = client.post("/api/v1/telemetry", content=raw, headers=NDJSON)
        assert r.status_code == 400, raw
        assert r.json()["error"] == "invalid_ndjson"
    assert "line 1" in client.post("/api/v1/telemetry", content=b"hello").json()["reason"]
    many = body(line(0), *(b"{}" for _ in range(300)))
    answer = client.post("/api/v1/telemetry", content=many).json()
    assert answer["accepted"] == 1
    assert answer["rejected"] == 300
    assert len(answer["errors"]) == MAX_REPORTED_ERRORS
    assert answer["errors"][-1]["line"] == MAX_REPORTED_ERRORS + 1


def test_a_form_or_text_body_is_415(served: Served) -> None:
    client, _, _, _ = served
    for media_type in ("text/plain", "application/x-www-form-urlencoded"):
        r = client.post("/api/v1/telemetry", content=line(1), headers={"Content-Type": media_type})
        assert r.status_code == 415
        assert r.json()["error"] == "unsupported_media_type"
    ok = {"Content-Type": "application/json; charset=utf-8"}
    assert client.post("/api/v1/telemetry", content=line(1), headers=ok).status_code == 202


def test_a_large_body_is_413_before_it_is_read_whole(served: Served) -> None:
    client, batcher, _, _ = served
    big = body(*(line(i) for i in range(2000)))  # ~330 kB against 200 kB
    r = client.post("/api/v1/telemetry", content=big)
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        for start in range(0, len(big), 10_000):
            yield big[start : start + 10_000]

    r = client.post("/api/v1/telemetry", content=chunks())
    assert r.status_code == 413
    assert batcher.depth == 0
    fits = body(*(line(i) for i in range(1100)))
    assert len(fits) < 200_000
    assert client.post("/api/v1/telemetry", content=fits).json()["accepted"] == 1100


def test_a_body_parsed_in_a_worker_thread_gives_the_same_answer(tmp_path: Path) -> None:
    with serving(tmp_path, telemetry_max_body_bytes=2_000_000) as (client, batcher, store, _):
        raw = body(*(line(i) for i in range(5000)), b"bad")  # ~800 kB: parsed in a thread
        answer = client.post("/api/v1/telemetry", content=raw).json()
        assert answer == {
            "accepted": 5000,
            "rejected": 1,
            "errors": [
                {"line": 5001, "reason": "bad_json", "detail": answer["errors"][0]["detail"]}
            ],
        }
        batcher.flush()
        assert store.count() == 5000


def test_a_full_queue_answers_503_with_retry_after_and_takes_nothing(tmp_path: Path) -> None:
    with serving(tmp_path, telemetry_queue_max=100) as (client, batcher, store, registry):
        first = client.post("/api/v1/telemetry", content=body(*(line(i) for i in range(80))))
        assert first.status_code == 202
        r = client.post("/api/v1/telemetry", content=body(*(line(i) for i in range(80, 110))))
        assert r.status_code == 503
        assert r.json()["error"] == "queue_full"
        assert int(r.headers["Retry-After"]) >= 1
        assert batcher.depth == 80
        full = registry.get_sample_value(
            "openclaw_telemetry_events_rejected_total", {"source": "http", "reason": "queue_full"}
        )
        assert full == 30
        too_many = client.post("/api/v1/telemetry", content=body(*(line(i) for i in range(101))))
        assert too_many.status_code == 413  # no retry could ever fit it
        batcher.flush()
        again = client.post("/api/v1/telemetry", content=body(*(line(i) for i in range(80, 110))))
        assert again.status_code == 202
        batcher.flush()
        assert store.count() == 110
        ready = client.get("/readyz").json()
        assert ready["telemetry"] == {"store": "duckdb", "queue_depth": 0}


def test_without_a_queue_the_endpoint_is_503() -> None:
    app = create_app(Settings(), MemoryStore(), PolicyHolder.from_file(None), CollectorRegistry())
    with BackgroundServer(app, Settings()) as server:
        r = httpx.post(f"{server.url}/api/v1/telemetry", content=line(1), timeout=10)
    assert r.status_code == 503
    assert r.json()["error"] == "telemetry_disabled"


# -- the middleware -------------------------------------------------------------------------


class Stepping:
    """A clock that moves 0.25 s each time it is read: every request takes 250 ms."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def test_the_middleware_emits_one_event_per_request(tmp_path: Path) -> None:
    settings_ = Settings(telemetry_batch_size=10_000, telemetry_flush_interval_s=60)
    event_store = open_event_store(f"duckdb://{tmp_path / 'mw.duckdb'}", settings=settings_)
    batcher = TelemetryBatcher.from_settings(event_store, settings_, CollectorRegistry())

    async def item(request: Request) -> Response:
        if request.path_params["id"] == "boom":
            raise RuntimeError("the app failed")
        return PlainTextResponse("x" * 123)

    class Two:
        """Two requests per client, then 429."""

        name = "static"
        version = "test"

        def limits_for(self, client_id: str, *, route: str | None = None) -> Any:
            return (BucketParams(2, 0.0001),)

        def tier_of(self, client_id: str) -> str:
            return "two"

    class Holder:
        current = Two()

        def reload(self) -> str | None:
            return None

    wall: Callable[[], float] = lambda: T0  # noqa: E731
    app = Starlette(
        routes=[Route("/items/{id}", item, methods=["GET", "POST"])],
        middleware=[
            Middleware(
                RateLimitMiddleware,
                store=MemoryStore(),
                policies=Holder(),
                telemetry=batcher,
                clock=Stepping(),
                wall_clock=wall,
                max_client_id_length=20,
            )
        ],
    )
    with BackgroundServer(app, settings_) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/items/1", headers={"X-Client-ID": "alice"}).status_code == 200
        assert client.post("/items/2", headers={"X-Client-ID": "alice"}).status_code == 200
        assert client.get("/items/3", headers={"X-Client-ID": "alice"}).status_code == 429
        assert client.get("/nowhere", headers={"X-Client-ID": "bob"}).status_code == 404
        assert client.get("/items/1", headers={"X-Client-ID": "y" * 21}).status_code == 200
        assert client.get("/items/1").status_code == 200  # no header: the remote address
        # Last: after an exception uvicorn closes the connection.
        assert client.get("/items/boom", headers={"X-Client-ID": "bob"}).status_code == 500
    batcher.close()
    events = sorted(event_store.scan().events(), key=lambda e: (e.client_id, e.event_id))
    event_store.close()
    seen = [(e.client_id, e.status_code, e.route, e.method, e.bytes) for e in events]
    assert sorted(seen, key=str) == sorted(
        [
            ("alice", 200, "/items/{id}", "GET", 123),
            ("alice", 200, "/items/{id}", "POST", 123),
            ("alice", 429, "/items/{id}", "GET", seen_bytes(events, "alice", 429)),
            ("bob", 404, "/nowhere", "GET", seen_bytes(events, "bob", 404)),
            # Starlette's outermost middleware answers an exception: its body goes unseen.
            ("bob", 500, "/items/{id}", "GET", None),
            ("127.0.0.1", 200, "/items/{id}", "GET", 123),
        ],
        key=str,
    )
    # The 429 body is the middleware's own JSON, the 404 one Starlette's.
    assert seen_bytes(events, "alice", 429) == len(
        b'{"error": "rate_limited", "reason": "too many requests"}'
    )
    assert seen_bytes(events, "bob", 404) == len(b"Not Found")
    assert {e.response_time_ms for e in events} == {250.0}
    assert {e.ts_us for e in events} == {round(T0 * 1e6)}
    assert len({e.event_id for e in events}) == 6  # the too-long client id was not emitted


def seen_bytes(events: list[Event], client: str, status: int) -> int | None:
    return next(e.bytes for e in events if e.client_id == client and e.status_code == status)


# -- openclaw serve: SIGTERM writes everything accepted ------------------------------------


def test_serve_flushes_every_accepted_event_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    events_file = tmp_path / "telemetry.duckdb"
    env = {
        "OPENCLAW_TELEMETRY_URL": f"duckdb://{events_file}",
        # Nothing is written before shutdown but by the SIGTERM path itself.
        "OPENCLAW_TELEMETRY_FLUSH_INTERVAL_S": "3600",
        "OPENCLAW_TELEMETRY_BATCH_SIZE": "1000000",
    }
    proc = subprocess.Popen(
        [str(BIN / "openclaw"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "openclaw serve exited"
            try:
                ready = httpx.get(f"{url}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert ready.json()["telemetry"] == {"store": "duckdb", "queue_depth": 0}
        accepted = 0
        with httpx.Client(base_url=url, timeout=30) as client:
            for k in range(20):
                lines = [line(k * 1000 + i) for i in range(1000)]
                r = client.post("/api/v1/telemetry", content=body(*lines), headers=NDJSON)
                assert r.status_code == 202
                accepted += r.json()["accepted"]
            depth = client.get("/readyz").json()["telemetry"]["queue_depth"]
        assert depth == accepted == 20_000  # all of it still queued
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        proc.stderr.close()
    assert "could not be written" not in log
    with duckdb.connect(str(events_file), read_only=True) as con:
        row = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
    assert row == (20_000, 20_000)


def test_serve_refuses_to_start_on_a_telemetry_store_it_cannot_open(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    result = subprocess.run(
        [str(BIN / "openclaw"), "serve", "--port", str(free_port())],
        env={**os.environ, "OPENCLAW_TELEMETRY_URL": f"duckdb://{blocker}/events.duckdb"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "events.duckdb" in result.stderr


@pytest.mark.parametrize("ts", [5e306, -1e16, 1.7e308, float("nan"), 631_151_999.0])
def test_a_timestamp_out_of_range_is_rejected_not_a_500(ts: float) -> None:
    """Finite seconds that are infinite in microseconds once overflowed (schemathesis)."""
    raw = orjson.dumps(
        {"client_id": "a", "timestamp": ts, "status_code": 200, "response_time_ms": 1},
        option=orjson.OPT_SERIALIZE_NUMPY,
    ).replace(b"null", b"NaN")
    got = parse_ndjson(raw + b"\n" + line(1), max_client_id_length=256, id_prefix="p-")
    assert len(got.batch) == 1
    assert [(r.line, r.reason) for r in got.rejections] == [
        (1, "bad_json" if math.isnan(ts) else "bad_timestamp")
    ]
