"""One feature code path: DuckDB and ClickHouse SQL agree, the service's online rows agree with
the store's, and no window's row sees past the window's end. Real stores: a DuckDB file and the
session's clickhouse-server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from openclaw.features.core import (
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    US,
    FeatureFrame,
    aggregate_events,
    assemble,
)
from openclaw.features.offline import extract_features, read_parquet, write_parquet
from openclaw.features.online import OnlineFeatures
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.events import EventBatch
from openclaw.telemetry.stores import open_event_store
from openclaw.testing.clickhouse import ClickHouseServer
from openclaw.testing.traces import NASA

W = 300 * US
#: A window-aligned start: 2024-01-01 00:00 UTC.
T0 = 1_704_067_200 * US
SETTINGS = Settings()


def objects(values: list[object]) -> npt.NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def make_events(seed: int, n: int = 6_000, *, windows: int = 8, prefix: str = "") -> EventBatch:
    """Bursty events of a dozen clients over ``windows`` windows: ties, window edges, unknown
    response times, every status class, and client ids whose byte order is not ASCII's."""
    rng = np.random.default_rng(seed)
    clients = ["a", "B", "b", "zz", "ü-user", "é", "client 7", "10.0.0.1", "x" * 40, "Ω", "2", "_"]
    weights = rng.pareto(1.0, len(clients)) + 0.2
    weights /= weights.sum()
    who = rng.choice(len(clients), n, p=weights)
    span = windows * W
    ts = T0 + rng.integers(0, span, n)
    # Bursts: a third of the events pile onto a few instants, some exactly on window edges.
    burst = rng.random(n) < 0.3
    instants = T0 + np.concatenate(
        [rng.integers(0, span, 20), np.arange(1, windows) * W, np.arange(1, windows) * W - 1]
    )
    ts[burst] = rng.choice(instants, int(burst.sum()))
    status = rng.choice([200, 204, 301, 404, 429, 500, 503, 101], n).astype(np.int16)
    rt = np.round(rng.lognormal(3.0, 1.0, n), 3)
    rt[rng.random(n) < 0.25] = np.nan
    return EventBatch(
        event_id=objects([f"{prefix}{seed}-{i}" for i in range(n)]),
        client_id=objects([clients[i] for i in who]),
        ts_us=ts.astype(np.int64),
        status_code=status,
        response_time_ms=rt,
        route=objects([None] * n),
        method=objects(["GET"] * n),
        bytes=np.full(n, -1, dtype=np.int64),
    )


def by_key(frame: FeatureFrame) -> FeatureFrame:
    """Rows in (client, window) order by Python's string order: stores sort by their own."""
    order = sorted(
        range(len(frame)),
        key=lambda i: (frame.client_id[i], int(frame.window_start_us[i])),
    )
    return frame.take(np.array(order, dtype=np.intp))


def assert_same_rows(left: FeatureFrame, right: FeatureFrame, *, exact: bool = True) -> None:
    a, b = by_key(left), by_key(right)
    assert a.client_id.tolist() == b.client_id.tolist()
    assert a.window_start_us.tolist() == b.window_start_us.tolist()
    for i, name in enumerate(FEATURE_NAMES):
        if exact:
            assert np.array_equal(a.X[:, i], b.X[:, i]), name
        else:
            np.testing.assert_allclose(a.X[:, i], b.X[:, i], rtol=1e-9, atol=1e-9, err_msg=name)
    assert np.array_equal(a.r_star, b.r_star)
    assert np.array_equal(a.b_star, b.b_star)


@pytest.fixture
def duckdb_store(tmp_path: Path) -> Iterator[EventStore]:
    store = open_event_store(f"duckdb://{tmp_path / 'events.duckdb'}", settings=SETTINGS)
    yield store
    store.close()


@pytest.fixture
def clickhouse_store(clickhouse_server: ClickHouseServer) -> Iterator[EventStore]:
    database = f"test_{uuid.uuid4().hex[:12]}"
    store = open_event_store(clickhouse_server.url_for(database), settings=SETTINGS)
    yield store
    store.close()
    clickhouse_server.execute(f"DROP DATABASE IF EXISTS {database}")


def numpy_rows(events: EventBatch, *, window_us: int = W) -> FeatureFrame:
    agg, ts = aggregate_events(events, window_us=window_us)
    return assemble(agg, ts, window_us=window_us, horizon_us=60 * US)


@pytest.mark.clickhouse
def test_duckdb_and_clickhouse_give_the_same_rows(
    duckdb_store: EventStore, clickhouse_store: EventStore
) -> None:
    events = make_events(1)
    assert duckdb_store.insert(events) == len(events)
    assert clickhouse_store.insert(events) == len(events)
    from_duckdb = extract_features(duckdb_store, settings=SETTINGS)
    from_clickhouse = extract_features(clickhouse_store, settings=SETTINGS)
    assert len(from_duckdb) > 50
    assert_same_rows(from_duckdb, from_clickhouse, exact=False)
    assert_same_rows(from_duckdb, from_clickhouse)  # and in fact bit for bit
    # Both are the NumPy twin's rows, which the online path uses.
    assert_same_rows(from_duckdb, numpy_rows(events))
    # Every feature varies somewhere (a column stuck at 0 would agree trivially).
    assert all(np.ptp(from_duckdb.X[:, i]) > 0 for i in range(len(FEATURE_NAMES)))
    # Slicing the range changes nothing.
    sliced = extract_features(clickhouse_store, settings=SETTINGS, slice_s=900.0)
    assert_same_rows(from_duckdb, sliced)


@pytest.mark.clickhouse
def test_stores_agree_on_another_window_and_a_subrange(
    duckdb_store: EventStore, clickhouse_store: EventStore
) -> None:
    events = make_events(2, 3_000, windows=20)
    duckdb_store.insert(events)
    clickhouse_store.insert(events)
    # 45 s windows do not divide a minute: the 60 s buckets are cut at each window's end.
    kwargs = {"window_s": 45.0, "since_us": T0 + 100 * US, "until_us": T0 + 3_000 * US}
    a = extract_features(duckdb_store, settings=SETTINGS, **kwargs)  # type: ignore[arg-type]
    b = extract_features(clickhouse_store, settings=SETTINGS, **kwargs)  # type: ignore[arg-type]
    assert_same_rows(a, b)
    # Whole windows only: since moves forward, until back, to 45 s boundaries.
    assert a.window_start_us.min() >= T0 + 100 * US
    assert (a.window_start_us % (45 * US) == 0).all()
    assert (a.window_start_us + 45 * US).max() <= T0 + 3_000 * US
    inside = (events.ts_us >= a.window_start_us.min()) & (
        events.ts_us < a.window_start_us.max() + 45 * US
    )
    assert a.column("n_requests").sum() == inside.sum()


def test_online_rows_are_the_stores_rows(duckdb_store: EventStore) -> None:
    events = make_events(3)
    duckdb_store.insert(events)
    offline = extract_features(duckdb_store, settings=SETTINGS)

    online = OnlineFeatures(SETTINGS)
    rng = np.random.default_rng(0)
    order = np.argsort(events.ts_us, kind="stable")
    cuts = np.sort(rng.choice(len(events), 40, replace=False))
    frames: list[FeatureFrame] = []
    for part in np.split(order, cuts):
        if part.size == 0:
            continue
        # Within a delivered batch, arrival order is not time order.
        chunk = events.take(rng.permutation(part))
        assert online.observe(chunk) == len(chunk)
        frames.extend(online.close_until(int(chunk.ts_us.max())))
    frames.extend(online.close_until(int(events.ts_us.max()) + W))
    assert online.late_events == 0
    assert online.stats().buffered_events == 0
    assert_same_rows(offline, FeatureFrame.concat(frames))


def test_no_leakage_offline(event_store: EventStore) -> None:
    """Rows of windows that ended are the same after later events arrive (in both stores)."""
    events = make_events(4, 2_000, windows=4)
    event_store.insert(events)
    until = T0 + 4 * W
    before = extract_features(event_store, settings=SETTINGS, until_us=until)
    # Later: the same clients again (one exactly at the boundary), and a new client.
    later = make_events(5, 2_000, windows=3, prefix="later-")
    shifted = EventBatch(
        **{name: getattr(later, name) for name in EventBatch.__slots__ if name != "ts_us"},
        ts_us=later.ts_us + 4 * W,
    )
    assert shifted.ts_us.min() >= until
    event_store.insert(shifted)
    after = extract_features(event_store, settings=SETTINGS)
    assert len(after) > len(before)
    kept = after.take(np.flatnonzero(after.window_start_us < until))
    assert_same_rows(before, kept)


def test_no_leakage_online_and_late_events() -> None:
    events = make_events(6, 2_000, windows=3)
    online = OnlineFeatures(SETTINGS)
    first = events.take(events.ts_us < T0 + W)
    online.observe(first)
    rows = online.close_window(int(T0 // W))
    assert len(rows) > 0
    expected = numpy_rows(first)
    assert_same_rows(rows, expected)
    # The rest, including events of the closed window: those are late and left out.
    online.observe(events.take(events.ts_us >= T0 + W))
    late = make_events(7, 50, windows=1, prefix="late-")
    assert online.observe(late) == 0
    assert online.late_events == 50
    assert_same_rows(online.rows_for(int(T0 // W)), expected)
    with pytest.raises(KeyError, match="still open"):
        online.rows_for(int(T0 // W) + 1)
    # A window without events closes to an empty frame.
    assert len(online.close_window(int(T0 // W) + 10)) == 0


def test_parquet_round_trip(duckdb_store: EventStore, tmp_path: Path) -> None:
    duckdb_store.insert(make_events(8, 1_000))
    frame = extract_features(duckdb_store, settings=SETTINGS)
    path = tmp_path / "out" / "features.parquet"
    write_parquet(frame, path)
    back = read_parquet(path)
    assert back.schema_version == FEATURE_SCHEMA_VERSION
    assert back.window_s == 300.0
    assert back.label_horizon_s == 60.0
    assert back.client_id.tolist() == frame.client_id.tolist()
    assert np.array_equal(back.window_start_us, frame.window_start_us)
    assert np.array_equal(back.X, frame.X)
    assert np.array_equal(back.b_star, frame.b_star)
    # A file of another schema is refused, not misread.
    import duckdb

    other = tmp_path / "other.parquet"
    duckdb.sql(f"COPY (SELECT 1 AS n_requests) TO '{other}' (FORMAT parquet)")
    with pytest.raises(ValueError, match="feature schema"):
        read_parquet(other)


def load_nasa() -> EventBatch:
    host: list[str] = []
    ts: list[int] = []
    status: list[int] = []
    with NASA.open() as f:
        header = next(f).rstrip("\n").split("\t")
        at = [header.index(name) for name in ("host", "time", "response")]
        for line in f:
            fields = line.rstrip("\n").split("\t")
            host.append(fields[at[0]])
            ts.append(int(fields[at[1]]) * US)
            status.append(int(fields[at[2]]))
    n = len(ts)
    return EventBatch(
        event_id=objects([f"nasa-{i}" for i in range(n)]),
        client_id=objects(list(host)),
        ts_us=np.array(ts, dtype=np.int64),
        status_code=np.array(status, dtype=np.int16),
        response_time_ms=np.full(n, np.nan),
        route=objects([None] * n),
        method=objects([None] * n),
        bytes=np.full(n, -1, dtype=np.int64),
    )


def test_nasa_trace_through_a_store(event_store: EventStore) -> None:
    """The README's peaks (11 in 1 s, 17 in 10 s, 29 in 60 s for one host) from a store's rows:
    one-day windows hold the whole trace; the label horizon sets the sliding peak's span."""
    event_store.insert(load_nasa())
    peaks = {}
    for horizon in (1.0, 10.0, 60.0):
        settings = Settings(window_s=86_400.0, label_horizon_s=horizon)
        frame = extract_features(event_store, settings=settings)
        assert len(frame) == 2_582
        peaks[int(horizon)] = round(float(frame.r_star.max()) * horizon)
    assert peaks == {1: 11, 10: 17, 60: 29}
    # 300 s windows: far more rows, none sliding past 29 in 60 s.
    frame = extract_features(event_store, settings=SETTINGS)
    assert frame.column("n_requests").sum() == 33_996
    assert float(frame.r_star.max()) * 60 <= 29
    assert frame.column("frac_latency_unknown").min() == 1.0


def test_the_service_computes_the_stores_rows_online(tmp_path: Path) -> None:
    """Events POSTed to the running service reach the online features (through the telemetry
    queue's observer) and the store; the rows computed online are the store's rows. A write
    that fails and is retried does not show the observer its events twice."""
    import asyncio

    import httpx
    import orjson
    from prometheus_client import CollectorRegistry

    from openclaw.limiter.memory import MemoryStore
    from openclaw.policy.static import PolicyHolder
    from openclaw.service.app import create_app
    from openclaw.service.server import BackgroundServer, close_telemetry
    from openclaw.telemetry.batcher import TelemetryBatcher

    events = make_events(6, 3_000, windows=3)
    # The HTTP schema requires a response time; access logs are the only source without.
    rt = np.where(np.isnan(events.response_time_ms), 7.0, events.response_time_ms)
    settings = Settings(telemetry_batch_size=1_000_000, telemetry_flush_interval_s=3600)
    store = open_event_store(f"duckdb://{tmp_path / 'events.duckdb'}", settings=settings)
    failures = {"left": 1}
    real_insert = store.insert

    def insert_failing_once(batch: EventBatch) -> int:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("disk full (once)")
        return real_insert(batch)

    store.insert = insert_failing_once  # type: ignore[method-assign]
    online = OnlineFeatures(settings)
    registry = CollectorRegistry()
    batcher = TelemetryBatcher.from_settings(store, settings, registry, observers=[online])

    async def close_queue() -> None:
        await asyncio.to_thread(close_telemetry, batcher, store, timeout_s=10)

    app = create_app(
        settings,
        MemoryStore(),
        PolicyHolder.from_file(None),
        registry,
        on_shutdown=[close_queue],
        telemetry=batcher,
    )
    lines = [
        orjson.dumps(
            {
                "event_id": events.event_id[i],
                "client_id": events.client_id[i],
                "timestamp": int(events.ts_us[i]) / US,
                "status_code": int(events.status_code[i]),
                "response_time_ms": float(rt[i]),
            }
        )
        for i in np.random.default_rng(1).permutation(len(events))
    ]
    with (
        BackgroundServer(app, settings) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        for start in range(0, len(lines), 700):
            body = b"\n".join(lines[start : start + 700])
            reply = client.post("/api/v1/telemetry", content=body)
            assert reply.status_code == 202, reply.text
            answer = reply.json()
            assert answer["accepted"] == len(lines[start : start + 700]), answer
            if start == 1400:
                with pytest.raises(Exception, match="disk full"):
                    batcher.flush()  # observed, then the write fails and is put back
        assert batcher.flush() == len(events)
        assert store.count() == len(events)
        online_rows = FeatureFrame.concat(online.close_until(int(events.ts_us.max()) + W))
        offline_rows = extract_features(store, settings=settings)
    assert online.stats().late_events == 0
    assert len(online_rows) == len(offline_rows) > 0
    assert_same_rows(offline_rows, online_rows)
