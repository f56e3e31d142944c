"""The in-process telemetry queue: when it writes, its bound, store failures, shutdown.

The logic is driven by hand with a fake clock and a store that keeps batches in a list (a
fake of the store is fine here: what is tested is the queue); the worker thread and close()
also run against a real DuckDB file.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from openclaw.clock import FakeClock
from openclaw.errors import TelemetryQueueFull, TelemetryStoreError
from openclaw.settings import Settings
from openclaw.telemetry.batcher import TelemetryBatcher
from openclaw.telemetry.events import Event, EventBatch
from openclaw.telemetry.stores import open_event_store

T0 = 1_700_000_000_000_000


def events(n: int, prefix: str = "e", start: int = 0) -> EventBatch:
    return EventBatch.from_events(
        [Event(f"{prefix}{i}", f"c{i % 7}", T0 + i, 200, 1.5) for i in range(start, start + n)]
    )


class ListStore:
    """Keeps inserted batches; fails the next ``fail`` inserts (or every one, with -1)."""

    dialect = "duckdb"

    def __init__(self, fail: int = 0, error: type[Exception] = TelemetryStoreError) -> None:
        self.batches: list[EventBatch] = []
        self.fail = fail
        self.error = error
        self.calls = 0
        self.lock = threading.Lock()

    def insert(self, batch: EventBatch) -> int:
        with self.lock:
            self.calls += 1
            if self.fail:
                self.fail -= 1 if self.fail > 0 else 0
                raise self.error("the store is down")
            self.batches.append(batch)
            return len(batch)

    def ping(self) -> bool:
        return True

    @property
    def ids(self) -> list[str]:
        return [str(i) for b in self.batches for i in b.event_id]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def make(
    store: ListStore, clock: FakeClock, registry: CollectorRegistry | None = None, **kw: int
) -> TelemetryBatcher:
    options = {"batch_size": 10, "queue_max": 100, **kw}
    return TelemetryBatcher(
        store,  # type: ignore[arg-type]
        registry or CollectorRegistry(),
        batch_size=options["batch_size"],
        flush_interval_s=1.0,
        queue_max=options["queue_max"],
        clock=clock,
    )


def test_writes_when_a_batch_is_full() -> None:
    store, clock = ListStore(), FakeClock()
    batcher = make(store, clock)
    batcher.submit(events(9), source="http")
    assert not batcher.due(clock())
    assert batcher.flush_if_due() == 0
    batcher.submit(events(1, start=9), source="http")
    assert batcher.due(clock())
    assert batcher.flush_if_due() == 10
    assert store.ids == [f"e{i}" for i in range(10)]
    assert batcher.depth == 0


def test_writes_when_the_oldest_event_has_waited_the_interval() -> None:
    store, clock = ListStore(), FakeClock(100.0)
    batcher = make(store, clock)
    batcher.submit(events(1), source="http")
    clock.advance(0.5)
    batcher.submit(events(1, start=1), source="http")
    clock.advance(0.49)
    assert not batcher.due(clock())
    clock.advance(0.01)  # the first event has now waited 1 s; the second 0.5 s
    assert batcher.flush_if_due() == 2
    assert not batcher.due(clock() + 10)  # nothing left


def test_single_events_and_batches_are_written_together() -> None:
    store, clock = ListStore(), FakeClock()
    batcher = make(store, clock)
    batcher.submit(events(3), source="http")
    batcher.submit_event(Event("m1", "a", T0, 404, 2.0, "/x", "GET", 12), source="middleware")
    assert batcher.flush() == 4
    (written,) = store.batches
    assert sorted(written.event_id) == ["e0", "e1", "e2", "m1"]
    m1 = next(e for e in written.events() if e.event_id == "m1")
    assert m1 == Event("m1", "a", T0, 404, 2.0, "/x", "GET", 12)


def test_a_batch_past_the_bound_is_refused_whole_and_counted() -> None:
    registry = CollectorRegistry()
    store, clock = ListStore(), FakeClock()
    batcher = make(store, clock, registry, queue_max=10, batch_size=100)
    batcher.submit(events(8), source="http")
    with pytest.raises(TelemetryQueueFull, match="8 of 10") as caught:
        batcher.submit(events(3, start=8), source="http")
    assert caught.value.retry_after_s >= 1.0
    assert batcher.depth == 8  # nothing of the refused batch was taken
    batcher.submit(events(2, start=8), source="http")  # exactly up to the bound is fine
    assert batcher.depth == 10
    with pytest.raises(TelemetryQueueFull):
        batcher.submit_event(Event("x", "a", T0, 200, 1.0), source="middleware")
    assert sample(registry, "openclaw_telemetry_events_accepted_total", source="http") == 10
    rejected = "openclaw_telemetry_events_rejected_total"
    assert sample(registry, rejected, source="http", reason="queue_full") == 3
    assert sample(registry, rejected, source="middleware", reason="queue_full") == 1
    assert sample(registry, "openclaw_telemetry_queue_depth") == 10
    assert batcher.flush() == 10
    assert sample(registry, "openclaw_telemetry_queue_depth") == 0
    batcher.submit(events(10, start=10), source="http")  # room again once written


@pytest.mark.parametrize("error", [TelemetryStoreError, RuntimeError])
def test_a_store_failure_keeps_the_events_and_backs_off(error: type[Exception]) -> None:
    registry = CollectorRegistry()
    store, clock = ListStore(fail=2, error=error), FakeClock()
    batcher = make(store, clock, registry)
    batcher.submit(events(10), source="http")
    with pytest.raises(TelemetryStoreError, match="down"):
        batcher.flush_if_due()
    assert batcher.depth == 10
    assert "down" in (batcher.last_error or "")
    assert sample(registry, "openclaw_telemetry_store_failures_total") == 1
    # Backing off: not due again before the first retry delay (0.1 s), even though full.
    assert not batcher.due(clock() + 0.09)
    batcher.submit(events(5, start=10), source="http")  # still accepting meanwhile
    clock.advance(0.1)
    with pytest.raises(TelemetryStoreError):
        batcher.flush_if_due()
    assert not batcher.due(clock() + 0.19)  # the second delay doubles
    clock.advance(0.2)
    assert batcher.flush_if_due() == 15
    assert store.ids == [f"e{i}" for i in range(15)]  # every event once, in order
    assert batcher.depth == 0
    assert batcher.last_error is None
    assert sample(registry, "openclaw_telemetry_store_failures_total") == 2
    assert sample(registry, "openclaw_telemetry_events_flushed_total") == 15
    assert sample(registry, "openclaw_telemetry_flush_seconds_count") == 1


def test_close_writes_everything_and_then_refuses() -> None:
    store, clock = ListStore(), FakeClock()
    batcher = make(store, clock, batch_size=1000)
    batcher.submit(events(7), source="http")
    batcher.close()
    assert len(store.ids) == 7
    with pytest.raises(TelemetryQueueFull, match="closed"):
        batcher.submit(events(1), source="http")


def test_close_retries_a_failing_store_then_says_what_is_lost() -> None:
    flaky = ListStore(fail=2)
    batcher = make(flaky, FakeClock(), batch_size=1000)
    batcher.submit(events(7), source="http")
    batcher.close(timeout_s=5)  # two failures, then it writes
    assert len(flaky.ids) == 7

    down = ListStore(fail=-1)
    batcher = make(down, FakeClock(), batch_size=1000)
    batcher.submit(events(7), source="http")
    with pytest.raises(TelemetryStoreError, match="7 accepted telemetry events could not"):
        batcher.close(timeout_s=0.3)
    assert batcher.depth == 7  # still held, not silently dropped


def test_the_worker_loses_nothing_under_concurrent_submits_and_failures() -> None:
    """Four threads submit while the store fails the first write and every third one after
    it: each id is stored once."""

    class Flaky(ListStore):
        def insert(self, batch: EventBatch) -> int:
            with self.lock:
                self.calls += 1
                if self.calls % 3 == 1:
                    raise TelemetryStoreError("the first and every third write fail")
                self.batches.append(batch)
                return len(batch)

    store = Flaky()
    batcher = TelemetryBatcher(
        store,  # type: ignore[arg-type]
        CollectorRegistry(),
        batch_size=500,
        flush_interval_s=0.01,
        queue_max=10**6,
    ).start()

    def produce(k: int) -> None:
        for j in range(50):
            batcher.submit(events(40, prefix=f"t{k}-{j}-"), source="http")
            batcher.submit_event(Event(f"s{k}-{j}", "a", T0, 200, 1.0), source="middleware")

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close(timeout_s=30)
    ids = store.ids
    assert len(ids) == 4 * 50 * 41
    assert len(set(ids)) == len(ids)
    assert store.calls >= 2  # the first write failed, so at least one more was made


def test_worker_and_close_on_a_real_duckdb_file(tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    settings = Settings(
        telemetry_url=url, telemetry_batch_size=1000, telemetry_flush_interval_s=0.05
    )
    store = open_event_store(url, settings=settings)
    registry = CollectorRegistry()
    batcher = TelemetryBatcher.from_settings(store, settings, registry).start()
    batcher.submit(events(2500), source="http")
    assert batcher.ping()
    batcher.submit(events(100, start=2500), source="http")
    batcher.close()
    assert store.count() == 2600
    stored = store.query("SELECT count(DISTINCT event_id) AS n, min(ts_us) AS t FROM events")
    assert stored["n"][0] == 2600
    assert stored["t"][0] == T0
    assert sample(registry, "openclaw_telemetry_events_flushed_total") == 2600
    store.close()
    # A second open of the file (after close) finds the same events.
    again = open_event_store(url, settings=settings)
    try:
        assert again.count() == 2600
        first = again.scan(until_us=T0 + 1)
        assert list(first.event_id) == ["e0"]
        assert np.array_equal(first.status_code, [200])
    finally:
        again.close()
