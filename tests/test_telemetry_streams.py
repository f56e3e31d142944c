"""The Redis Streams consumer on a real redis-server and real DuckDB files: validation and
the dead-letter stream, acknowledgement after commit, redelivery stored once, SIGTERM, and
SIGKILL in the middle of a stream (the durability test)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.events import Event, event_id_prefix
from openclaw.telemetry.stores import open_event_store
from openclaw.telemetry.streams import (
    StreamConsumer,
    dead_letter_stream,
    parse_entries,
    publish,
)
from openclaw.testing.redis import RedisServer

pytestmark = pytest.mark.redis

BIN = Path(sys.executable).parent
T0 = 1_700_000_000_000_000


def make_events(n: int, prefix: str = "e") -> list[Event]:
    return [
        Event(f"{prefix}{i}", f"c{i % 13}", T0 + i * 1000, 200 + i % 3, 1.0 + i % 7, "/r", "GET", i)
        for i in range(n)
    ]


def group_info(client: redis.Redis, stream: str, group: str) -> dict[str, Any]:
    for info in client.xinfo_groups(stream):
        if info["name"] in (group, group.encode()):
            return dict(info)
    raise AssertionError(f"no group {group}")


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as c:
        yield c


@pytest.fixture
def stream(key: str) -> str:
    return f"telemetry-{key}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = open_event_store(f"duckdb://{tmp_path / 'events.duckdb'}", settings=Settings())
    yield s
    s.close()


def consumer(
    client: redis.Redis, store: EventStore, stream: str, name: str = "c1", **kw: Any
) -> StreamConsumer:
    return StreamConsumer(client, store, stream=stream, group="g", consumer=name, block_ms=50, **kw)


# -- entries to events (pure) --------------------------------------------------------------


def test_entries_are_validated_and_ids_derived_from_the_entry() -> None:
    good = (
        b'{"client_id": "a", "timestamp": 1700000000.5, "response_time_ms": 3, "status_code": 201}'
    )
    entries: list[Any] = [
        (b"1-0", {b"event": good}),
        (b"1-1", {b"event": b"{nope"}),
        (b"1-2", {b"event": b'{"client_id": "a"}'}),
        (b"1-3", {b"other": b"x"}),
        (b"1-4", {}),  # an entry deleted before it was read
        (b"1-5", {b"event": good.replace(b"}", b', "event_id": "own"}')}),
    ]
    batch, rejected = parse_entries(entries, stream="s", max_client_id_length=256)
    assert list(batch.event_id) == [event_id_prefix("redis\0s") + "1-0", "own"]
    assert batch.ts_us[0] == 1_700_000_000_500_000
    assert [(r.entry_id, r.reason) for r in rejected] == [
        ("1-1", "bad_json"),
        ("1-2", "missing_field"),
        ("1-3", "missing_field"),
        ("1-4", "missing_field"),
    ]
    assert "other" in rejected[2].detail
    assert "deleted" in rejected[3].detail
    assert rejected[0].raw == b"{nope"


# -- the consumer in-process ---------------------------------------------------------------


def test_consumes_stores_rejects_and_acknowledges(
    client: redis.Redis, store: EventStore, stream: str
) -> None:
    registry = CollectorRegistry()
    events = make_events(2500)
    publish(client, stream, events[:1200])
    publish(client, stream, [b"not json", {"client_id": "x", "timestamp": 1.7e9}])
    publish(client, stream, events[1200:])
    results: list[Any] = []
    stats = consumer(client, store, stream, registry=registry, batch_size=1000).run(
        idle_exit_s=0.3, on_batch=lambda r, s: results.append(r)
    )
    assert stats.ended == "idle"
    assert (stats.entries, stats.stored, stats.duplicates) == (2502, 2500, 0)
    assert stats.rejected == {"bad_json": 1, "missing_field": 1}
    assert [r.entries for r in results] == [1000, 1000, 502]
    stored = {e.event_id: e for e in store.scan().events()}
    assert len(stored) == 2500
    assert stored["e77"] == events[77]
    info = group_info(client, stream, "g")
    assert info["pending"] == 0
    dead: Any = client.xrange(dead_letter_stream(stream))
    assert [f[b"reason"] for _, f in dead] == [b"bad_json", b"missing_field"]
    assert dead[0][1][b"raw"] == b"not json"
    assert dead[1][1][b"detail"] == b"status_code is required"
    accepted = registry.get_sample_value(
        "openclaw_telemetry_events_accepted_total", {"source": "redis"}
    )
    assert accepted == 2500
    rejected = registry.get_sample_value(
        "openclaw_telemetry_events_rejected_total", {"source": "redis", "reason": "bad_json"}
    )
    assert rejected == 1


def test_an_existing_group_keeps_its_position(
    client: redis.Redis, store: EventStore, stream: str
) -> None:
    publish(client, stream, make_events(10, "old"))
    first = consumer(client, store, stream)
    assert first.run(idle_exit_s=0.2).stored == 10
    publish(client, stream, make_events(5, "new"))
    again = consumer(client, store, stream, "c2")
    again.ensure_group()  # BUSYGROUP: fine, and the group is not reset to 0
    stats = again.run(idle_exit_s=0.2)
    assert (stats.entries, stats.stored) == (5, 5)
    assert store.count() == 15


def test_a_crash_between_commit_and_ack_is_stored_once(
    client: redis.Redis, store: EventStore, stream: str
) -> None:
    publish(client, stream, make_events(300))
    crashed = consumer(client, store, stream, batch_size=120)
    crashed.ensure_group()
    entries = crashed.read(">", block=False)
    batch, _ = parse_entries(entries, stream=stream, max_client_id_length=256)
    assert store.insert(batch) == 120  # committed... and the process dies before XACK
    assert group_info(client, stream, "g")["pending"] == 120
    # The same consumer name restarts: its pending entries first, then the rest.
    stats = consumer(client, store, stream, batch_size=120).run(idle_exit_s=0.2)
    assert (stats.entries, stats.stored, stats.duplicates) == (300, 180, 120)
    assert store.count() == 300
    assert group_info(client, stream, "g")["pending"] == 0


def test_entries_a_dead_consumer_left_are_claimed_by_another(
    client: redis.Redis, store: EventStore, stream: str
) -> None:
    publish(client, stream, make_events(50))
    gone = consumer(client, store, stream, "gone", batch_size=30)
    gone.ensure_group()
    assert len(gone.read(">", block=False)) == 30  # read, never acknowledged
    other = consumer(client, store, stream, "other", claim_idle_s=0.0)
    stats = other.run(idle_exit_s=0.2)
    assert stats.entries == 50
    assert store.count() == 50
    assert group_info(client, stream, "g")["pending"] == 0


def test_a_failing_store_leaves_the_batch_pending(
    client: redis.Redis, tmp_path: Path, stream: str
) -> None:
    url = f"duckdb://{tmp_path / 'later.duckdb'}"
    publish(client, stream, make_events(40))
    broken = open_event_store(url, settings=Settings())
    broken.close()  # every insert now raises TelemetryStoreError
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    registry = CollectorRegistry()
    stats = consumer(client, broken, stream, registry=registry).run(stop=stop)
    assert stats.ended == "failed"
    assert stats.stored == 0
    assert group_info(client, stream, "g")["pending"] == 40  # nothing acknowledged
    failures = registry.get_sample_value("openclaw_telemetry_store_failures_total")
    assert failures is not None
    assert failures >= 2  # retried while it failed
    working = open_event_store(url, settings=Settings())
    try:
        assert consumer(client, working, stream).run(idle_exit_s=0.2).stored == 40
        assert working.count() == 40
    finally:
        working.close()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_consumer_rides_out_a_redis_restart(
    own_redis: RedisServer, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-server is killed under a running consumer and started again (empty: it keeps
    nothing on disk); the consumer retries, recreates the group, and goes on."""
    stream = "restarts"
    with own_redis.client() as producer:
        publish(producer, stream, make_events(100, "before"))
    with own_redis.client() as c:
        stop = threading.Event()
        worker = consumer(c, store, stream)
        stats: list[Any] = []
        thread = threading.Thread(target=lambda: stats.append(worker.run(stop=stop)))
        thread.start()
        try:
            wait_for(lambda: store.count() == 100)
            own_redis.kill()
            time.sleep(0.5)  # the consumer sees the connection fail and backs off
            own_redis.start()
            with own_redis.client() as producer:
                publish(producer, stream, make_events(50, "after"))
            wait_for(lambda: store.count() == 150)
        finally:
            stop.set()
            thread.join(30)
        assert stats[0].ended == "stopped"
        assert stats[0].stored == 150
        assert any(r.message.startswith("redis: ") for r in caplog.records)  # it did fail
        assert group_info(c, stream, "g")["pending"] == 0


# -- the CLI: SIGTERM, and SIGKILL in the middle of a stream ------------------------------


def ingest(redis_url: str, stream: str, events_file: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(BIN / "openclaw"),
            "ingest",
            "--from",
            redis_url,
            "--stream",
            stream,
            "--group",
            "g",
            "--consumer",
            "worker-1",
            "--store",
            f"duckdb://{events_file}",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def total_of(progress_line: str) -> int:
    # "acknowledged 200 entries (...); total 1400 entries, 1400 stored"
    return int(progress_line.split("; total ")[1].split(" ", maxsplit=1)[0])


def count_events(events_file: Path) -> tuple[int, int]:
    s = open_event_store(f"duckdb://{events_file}", settings=Settings())
    try:
        got = s.query("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events")
    finally:
        s.close()
    return int(got["n"][0]), int(got["d"][0])


def test_sigterm_finishes_the_batch_acknowledges_and_exits_0(
    redis_server: RedisServer, client: redis.Redis, stream: str, tmp_path: Path
) -> None:
    events_file = tmp_path / "term.duckdb"
    proc = ingest(redis_server.url, stream, events_file, "--batch-size", "100")
    try:
        publish(client, stream, make_events(1000))
        assert proc.stderr is not None
        seen = 0
        while seen < 1000:
            progress = proc.stderr.readline()
            assert progress, f"ingest exited early: {proc.poll()}"
            if "; total " in progress:
                seen = total_of(progress)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "1000 entries, 1000 stored" in out
    assert "ended: stopped" in out
    assert count_events(events_file) == (1000, 1000)
    assert group_info(client, stream, "g")["pending"] == 0


def test_sigkill_in_the_middle_loses_nothing_and_stores_nothing_twice(
    redis_server: RedisServer, client: redis.Redis, stream: str, tmp_path: Path
) -> None:
    n = 20_000
    events = make_events(n)
    publish(client, stream, events[: n // 2])
    publish(client, stream, [b"{broken", {"client_id": "no-time"}])  # 2 bad entries
    publish(client, stream, events[n // 2 :])
    events_file = tmp_path / "durable.duckdb"

    first = ingest(redis_server.url, stream, events_file, "--batch-size", "200")
    try:
        assert first.stderr is not None
        while True:
            progress = first.stderr.readline()
            assert progress, f"ingest exited before the kill: {first.poll()}"
            if "; total " in progress and total_of(progress) >= 2000:
                break
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    info = group_info(client, stream, "g")
    acknowledged = info["entries-read"] - info["pending"]
    assert 0 < acknowledged < n + 2, info  # killed in the middle, not after the end

    second = ingest(
        redis_server.url, stream, events_file, "--batch-size", "1000", "--idle-exit", "1"
    )
    out, err = second.communicate(timeout=240)
    assert second.returncode == 0, err
    assert "ended: idle" in out

    assert count_events(events_file) == (n, n)  # every event, each once
    info = group_info(client, stream, "g")
    assert info["pending"] == 0
    assert info["entries-read"] == n + 2
    assert client.xlen(dead_letter_stream(stream)) == 2
    # Spot check: what was stored is what was published.
    s = open_event_store(f"duckdb://{events_file}", settings=Settings())
    try:
        stored = {e.event_id: e for e in s.scan(since_us=T0, until_us=T0 + 50_000).events()}
    finally:
        s.close()
    assert stored == {e.event_id: e for e in events[:50]}


def test_a_redis_that_does_not_answer_is_exit_2(tmp_path: Path) -> None:
    from openclaw.testing.redis import free_port

    result = subprocess.run(
        [
            str(BIN / "openclaw"),
            "ingest",
            "--from",
            f"redis://127.0.0.1:{free_port()}/0",
            "--store",
            f"duckdb://{tmp_path / 'x.duckdb'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Redis does not answer" in result.stderr
