"""One contract for every telemetry store: a DuckDB file and a real clickhouse-server.

``event_store`` / ``event_store_url`` (tests/conftest.py) run each test once per backend, each
on an empty store of its own.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from openclaw.errors import ConfigError, TelemetryStoreError
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.duckdb import translate_params
from openclaw.telemetry.events import Event, EventBatch
from openclaw.telemetry.stores import TELEMETRY_BACKENDS, open_event_store
from openclaw.testing.clickhouse import ClickHouseServer
from openclaw.testing.redis import free_port

T0 = 1_722_470_400_000_000  # 2024-08-01T00:00:00Z
DAY_US = 86_400_000_000


def ev(
    n: int,
    *,
    client: str = "client-a",
    ts_us: int | None = None,
    status: int = 200,
    rt: float | None = 12.5,
    route: str | None = "/api/items",
    method: str | None = "GET",
    size: int | None = 512,
) -> Event:
    return Event(
        event_id=f"e{n:06d}",
        client_id=client,
        ts_us=T0 + n * 1_000 if ts_us is None else ts_us,
        status_code=status,
        response_time_ms=rt,
        route=route,
        method=method,
        bytes=size,
    )


def batch(events: Sequence[Event]) -> EventBatch:
    return EventBatch.from_events(events)


def sorted_events(events: Sequence[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.client_id, e.ts_us, e.event_id))


def many(n: int, *, start: int = 0) -> list[Event]:
    """Events of three clients, a few statuses, some unknowns."""
    return [
        ev(
            i,
            client=("alpha", "beta", "gamma")[i % 3],
            status=(200, 404, 503)[i % 3 if i % 5 else 0],
            rt=None if i % 7 == 0 else float(i % 50) + 0.25,
            size=None if i % 11 == 0 else i * 10,
        )
        for i in range(start, start + n)
    ]


def plain_sql_counts(store: EventStore) -> tuple[int, int]:
    """Rows and distinct ids as feature SQL sees the events table: plain, no FINAL."""
    result = store.query(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events WHERE ts_us >= %(t)s",
        {"t": 0},
    )
    return int(result["n"][0]), int(result["ids"][0])


# -- the protocol, insert and count ---------------------------------------------------------


def test_store_implements_the_protocol(event_store: EventStore, event_store_url: str) -> None:
    assert isinstance(event_store, EventStore)
    assert event_store_url.startswith(f"{event_store.dialect}://")
    assert event_store.ping()
    assert event_store.count() == 0
    assert event_store.time_range() is None
    assert len(event_store.scan()) == 0
    assert event_store.insert(EventBatch.empty()) == 0


def test_insert_returns_new_rows_and_count_sees_them(event_store: EventStore) -> None:
    assert event_store.insert(batch(many(250))) == 250
    assert event_store.count() == 250
    assert plain_sql_counts(event_store) == (250, 250)


def test_same_batch_twice_is_stored_once(event_store: EventStore) -> None:
    events = batch(many(300))
    assert event_store.insert(events) == 300
    assert event_store.insert(events) == 0
    assert event_store.count() == 300
    assert plain_sql_counts(event_store) == (300, 300)
    ids = event_store.scan().event_id
    assert len(ids) == len(set(ids.tolist())) == 300


def test_overlapping_batches_store_each_id_once(event_store: EventStore) -> None:
    assert event_store.insert(batch(many(100))) == 100
    assert event_store.insert(batch(many(100, start=60))) == 60
    assert event_store.insert(batch(many(30, start=130))) == 0
    assert event_store.count() == 160
    assert plain_sql_counts(event_store) == (160, 160)
    assert event_store.scan().event_id.tolist() == [e.event_id for e in sorted_events(many(160))]


def test_a_batch_that_repeats_an_event_stores_it_once(event_store: EventStore) -> None:
    first = many(10)
    assert event_store.insert(batch([*first, first[3], first[3], first[7]])) == 10
    assert event_store.count() == 10
    assert plain_sql_counts(event_store) == (10, 10)


def test_duplicates_across_many_batches_and_days(event_store: EventStore) -> None:
    # Batches that span several day partitions, replayed out of order.
    events = [ev(i, ts_us=T0 + i * 3_600_000_000 + i, client=f"c{i % 4}") for i in range(96)]
    chunks = [events[i : i + 20] for i in range(0, 96, 20)]
    assert sum(event_store.insert(batch(c)) for c in chunks) == 96
    assert sum(event_store.insert(batch(c)) for c in reversed(chunks)) == 0
    assert event_store.insert(batch(events[::3])) == 0
    assert event_store.count() == 96
    assert plain_sql_counts(event_store) == (96, 96)


# -- scan: order and exact roundtrip --------------------------------------------------------


def test_scan_gives_back_equal_events_in_key_order(event_store: EventStore) -> None:
    events = [
        ev(1, client="zeta", ts_us=T0 + 1),  # one microsecond past the second
        ev(2, client="alpha", ts_us=T0 + 999_999, rt=None, size=None),
        ev(3, client="alpha", ts_us=T0 + 999_999, route=None, method=None),  # tie: by id
        ev(4, client="客户-七", ts_us=T0 + 123_456, rt=0.0, size=0),
        ev(5, client="émile 🚀", ts_us=T0 - 5, status=599, rt=86_400_000.0, size=2**62),
        ev(6, client="Zeta", ts_us=T0 + 42, status=100, rt=0.001, route="/ü/路径?q=1"),
        ev(7, client="alpha", ts_us=T0 + 500_000, rt=1.0 / 3.0, method="DELETE"),
        ev(8, client="a", ts_us=T0 + 7, route="", method="PATCH"),
    ]
    assert event_store.insert(batch(events)) == len(events)
    got = event_store.scan()
    assert list(got.events()) == sorted_events(events)
    assert got.ts_us.dtype == np.int64
    assert got.status_code.dtype == np.int16
    unknown = next(e for e in got.events() if e.event_id == "e000002")
    assert unknown.response_time_ms is None
    assert unknown.bytes is None
    no_route = next(e for e in got.events() if e.event_id == "e000003")
    assert no_route.route is None
    assert no_route.method is None


def test_unknowns_are_null_in_sql(event_store: EventStore) -> None:
    events = [ev(1, rt=None, size=None, route=None, method=None), ev(2, rt=4.0, size=8)]
    event_store.insert(batch(events))
    result = event_store.query(
        "SELECT count(*) AS n, count(response_time_ms) AS rt, count(bytes) AS b, "
        "count(route) AS r, count(method) AS m, sum(bytes) AS total FROM events"
    )
    assert {k: int(v[0]) for k, v in result.items()} == {
        "n": 2,
        "rt": 1,
        "b": 1,
        "r": 1,
        "m": 1,
        "total": 8,
    }


def test_count_and_scan_within_a_half_open_time_range(event_store: EventStore) -> None:
    events = [ev(i, ts_us=T0 + i * 1_000_000) for i in range(10)]
    event_store.insert(batch(events))
    since, until = T0 + 2_000_000, T0 + 6_000_000
    assert event_store.count(since_us=since, until_us=until) == 4
    assert event_store.count(since_us=since) == 8
    assert event_store.count(until_us=until) == 6
    assert event_store.count(since_us=until, until_us=since) == 0
    scanned = event_store.scan(since_us=since, until_us=until)
    assert list(scanned.events()) == events[2:6]
    assert list(event_store.scan(until_us=T0 + 1).events()) == events[:1]


def test_time_range_is_first_and_last_timestamp(event_store: EventStore) -> None:
    assert event_store.time_range() is None
    event_store.insert(
        batch([ev(1, ts_us=T0 + 17), ev(2, ts_us=T0 - 3 * DAY_US), ev(3, ts_us=T0 + 5)])
    )
    assert event_store.time_range() == (T0 - 3 * DAY_US, T0 + 17)


# -- retention ------------------------------------------------------------------------------


def test_retention_drops_events_older_than_90_days(event_store: EventStore) -> None:
    now = T0 + 12 * 3_600_000_000  # noon
    old = [ev(i, ts_us=now - days * DAY_US) for i, days in enumerate((400, 120, 95, 92))]
    recent = [ev(10 + i, ts_us=now - round(days * DAY_US)) for i, days in enumerate((89, 30, 1, 0))]
    event_store.insert(batch(old + recent))
    assert event_store.apply_retention(now_us=now) == len(old)
    assert list(event_store.scan().events()) == recent
    assert plain_sql_counts(event_store) == (4, 4)
    assert event_store.apply_retention(now_us=now) == 0
    assert event_store.count() == 4


def test_retention_follows_the_setting(event_store_url: str) -> None:
    settings = Settings(telemetry_retention_days=7)
    now = T0 + 12 * 3_600_000_000
    with closing(open_event_store(event_store_url, settings=settings)) as store:
        store.insert(batch([ev(1, ts_us=now - 9 * DAY_US), ev(2, ts_us=now - 5 * DAY_US)]))
        assert store.apply_retention(now_us=now) == 1
        assert [e.event_id for e in store.scan().events()] == ["e000002"]


# -- query ----------------------------------------------------------------------------------


def test_query_with_params_computes_what_numpy_computes(event_store: EventStore) -> None:
    events = many(600)
    event_store.insert(batch(events))
    since = T0 + 100 * 1_000
    result = event_store.query(
        "SELECT status_code, count(*) AS n, sum(bytes) AS total, min(ts_us) AS first "
        "FROM events WHERE ts_us >= %(since)s AND client_id != %(skip)s "
        "GROUP BY status_code ORDER BY status_code",
        {"since": since, "skip": "gamma"},
    )
    chosen = [e for e in events if e.ts_us >= since and e.client_id != "gamma"]
    statuses = sorted({e.status_code for e in chosen})
    assert result["status_code"].tolist() == statuses
    assert result["n"].tolist() == [sum(e.status_code == s for e in chosen) for s in statuses]
    assert result["total"].tolist() == [
        sum(e.bytes or 0 for e in chosen if e.status_code == s) for s in statuses
    ]
    assert result["first"].tolist() == [
        min(e.ts_us for e in chosen if e.status_code == s) for s in statuses
    ]


def test_query_escapes_string_params_and_keeps_literal_percent(event_store: EventStore) -> None:
    tricky = 'o\'brien\\ "x" %(not_a_param)s'
    event_store.insert(batch([ev(1, client=tricky, route="/api/v1"), ev(2, route="/static")]))
    result = event_store.query(
        "SELECT event_id FROM events WHERE client_id = %(c)s AND route LIKE '/api%%'",
        {"c": tricky},
    )
    assert result["event_id"].tolist() == ["e000001"]


def test_query_of_nothing_gives_empty_named_columns(event_store: EventStore) -> None:
    result = event_store.query("SELECT event_id, ts_us FROM events WHERE ts_us < %(t)s", {"t": T0})
    assert sorted(result) == ["event_id", "ts_us"]
    assert len(result["event_id"]) == len(result["ts_us"]) == 0


def test_query_maps_null_to_nan_in_numbers(event_store: EventStore) -> None:
    event_store.insert(batch([ev(1, rt=None, size=None), ev(2, rt=2.0, size=3)]))
    result = event_store.query(
        "SELECT response_time_ms AS rt, bytes AS b FROM events ORDER BY event_id"
    )
    assert np.isnan(result["rt"][0])
    assert result["rt"][1] == 2.0
    assert np.isnan(result["b"][0])
    assert result["b"][1] == 3


def test_a_bad_query_is_a_store_error(event_store: EventStore) -> None:
    with pytest.raises(TelemetryStoreError, match="query"):
        event_store.query("SELECT no_such_column FROM events")
    assert event_store.ping()


# -- schema, persistence, lifecycle ---------------------------------------------------------


def test_schema_creation_is_idempotent(event_store: EventStore, event_store_url: str) -> None:
    event_store.insert(batch(many(5)))
    event_store.create_schema()
    again = open_event_store(event_store_url, settings=Settings())
    try:
        again.create_schema()
        assert again.count() == 5
    finally:
        again.close()
    assert event_store.count() == 5


def test_events_persist_across_store_objects(event_store_url: str) -> None:
    events = many(50)
    first = open_event_store(event_store_url, settings=Settings())
    assert first.insert(batch(events)) == 50
    first.close()
    second = open_event_store(event_store_url, settings=Settings())
    try:
        assert list(second.scan().events()) == sorted_events(events)
        assert second.insert(batch(events)) == 0
    finally:
        second.close()


def test_closed_store_fails_clearly(event_store_url: str) -> None:
    store = open_event_store(event_store_url, settings=Settings())
    store.close()
    store.close()  # closing twice is fine
    assert not store.ping()
    with pytest.raises(TelemetryStoreError, match="closed"):
        store.count()
    with pytest.raises(TelemetryStoreError, match="closed"):
        store.insert(batch(many(1)))


def test_concurrent_overlapping_inserts_store_each_id_once(event_store: EventStore) -> None:
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for k in range(5):
                event_store.insert(batch(many(20, start=thread * 15 + k * 10)))
                event_store.ping()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Thread i wrote ids 15 i .. 15 i + 59, overlapping the others': 0 .. 104 in all.
    assert event_store.count() == 105
    assert plain_sql_counts(event_store) == (105, 105)


# -- URLs and failures ----------------------------------------------------------------------


def test_backends_are_listed_explicitly() -> None:
    assert sorted(TELEMETRY_BACKENDS) == ["clickhouse", "duckdb"]


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///tmp/x.db",
        "events.duckdb",
        "duckdb://",
        "clickhouse://",
        "clickhouse://:9000/db",
        "clickhouse://127.0.0.1:notaport/db",
        "clickhouse://127.0.0.1:9000/bad-name",
        "clickhouse://127.0.0.1:9000/db?secure=1",
    ],
)
def test_a_bad_url_is_a_config_error_naming_it(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_event_store(url, settings=Settings())
    assert repr(url) in str(info.value)


def test_duckdb_urls_relative_absolute_and_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with closing(open_event_store("duckdb://rel/dir/events.duckdb", settings=Settings())) as store:
        store.insert(batch(many(3)))
    assert (tmp_path / "rel" / "dir" / "events.duckdb").is_file()
    absolute = tmp_path / "abs.duckdb"
    with closing(open_event_store(f"duckdb://{absolute}", settings=Settings())) as store:
        store.insert(batch(many(2)))
    assert absolute.is_file()
    with closing(open_event_store("duckdb://:memory:", settings=Settings())) as store:
        assert store.insert(batch(many(4))) == 4
        assert store.count() == 4
    assert not (tmp_path / ":memory:").exists()


def test_duckdb_file_that_cannot_be_opened_is_a_store_error(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.duckdb"
    not_a_db.write_text("not a database\n" * 100)
    with pytest.raises(TelemetryStoreError, match=r"notes\.duckdb"):
        open_event_store(f"duckdb://{not_a_db}", settings=Settings())


@pytest.mark.clickhouse
def test_unreachable_clickhouse_fails_in_seconds() -> None:
    url = f"clickhouse://127.0.0.1:{free_port()}/default"
    started = time.monotonic()
    with pytest.raises(TelemetryStoreError, match=r"127\.0\.0\.1"):
        open_event_store(url, settings=Settings())
    assert time.monotonic() - started < 5


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.mark.clickhouse
def test_a_server_that_never_answers_fails_within_the_timeout(silent_server: int) -> None:
    settings = Settings(telemetry_connect_timeout_s=0.5, telemetry_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(TelemetryStoreError):
        open_event_store(f"clickhouse://127.0.0.1:{silent_server}/db", settings=settings)
    assert time.monotonic() - started < 5


@pytest.mark.clickhouse
def test_duckdb_and_clickhouse_agree_on_the_same_events(
    tmp_path: Path, clickhouse_server: ClickHouseServer
) -> None:
    events = many(900)
    sql = (
        "SELECT client_id, count(*) AS n, sum(bytes) AS total, "
        "max(response_time_ms) AS worst, min(ts_us) AS first, max(ts_us) AS last "
        "FROM events WHERE ts_us >= %(since)s AND status_code < %(status)s "
        "GROUP BY client_id ORDER BY client_id"
    )
    params = {"since": T0 + 50_000, "status": 500}
    results = []
    for url in (
        f"duckdb://{tmp_path / 'parity.duckdb'}",
        clickhouse_server.url_for("test_parity"),
    ):
        with closing(open_event_store(url, settings=Settings())) as store:
            store.insert(batch(events))
            store.insert(batch(events[100:300]))
            results.append(store.query(sql, params))
    clickhouse_server.execute("DROP DATABASE IF EXISTS test_parity")
    duck, house = results
    assert list(duck) == list(house)
    for name in duck:
        assert duck[name].tolist() == house[name].tolist(), name
    assert sum(duck["n"].tolist()) > 0


def _listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs process ``pid`` listens on, from /proc (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            if len(raw) == 4:
                address = str(ipaddress.IPv4Address(raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                address = str(ipaddress.IPv6Address(words))
            found.add((address, int(port_hex, 16)))
    return found


@pytest.mark.clickhouse
def test_clickhouse_fixture_listens_on_its_loopback_port_only(
    clickhouse_server: ClickHouseServer,
) -> None:
    assert clickhouse_server.proc is not None
    assert _listening(clickhouse_server.proc.pid) == {("127.0.0.1", clickhouse_server.port)}


def test_translate_params_to_duckdb() -> None:
    assert translate_params("a = %(x)s AND b LIKE 'z%%' AND c = %(y_1)s") == (
        "a = $x AND b LIKE 'z%' AND c = $y_1"
    )
