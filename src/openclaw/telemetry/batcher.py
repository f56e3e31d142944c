"""The in-process telemetry queue: sources submit validated events, a worker thread writes
them to the store in batches.

Stores are blocking (a DuckDB insert, a ClickHouse round trip), so the service's event loop
never calls them: the HTTP endpoint and the middleware only append to this queue, and one
worker thread writes whenever ``batch_size`` events are waiting or the oldest has waited
``flush_interval_s``. The queue is bounded: a submit that would take it past ``queue_max``
raises :class:`TelemetryQueueFull` and nothing of that batch is taken, so the sender can
retry it; what was accepted is never dropped. A store failure puts the batch back at the
head of the queue and the worker retries it with a growing back-off; :meth:`flush` and
:meth:`close` (the SIGTERM path) write everything that is buffered.

The decision of when to write (:meth:`TelemetryBatcher.due`) reads the injected clock only,
so tests drive it by hand with :meth:`TelemetryBatcher.flush_if_due` and no thread.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from openclaw.clock import Clock, monotonic
from openclaw.errors import TelemetryQueueFull, TelemetryStoreError
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.events import Event, EventBatch, Rejection

__all__ = ["EventObserver", "TelemetryBatcher", "TelemetryMetrics"]

log = logging.getLogger(__name__)


class EventObserver(Protocol):
    """Sees every accepted event once, in the worker thread, before it is written (the
    online features: ``openclaw.features.online.OnlineFeatures``). Called from one thread
    only, so an observer needs no lock of its own."""

    def observe(self, batch: EventBatch) -> int: ...


NAMESPACE: Final = "openclaw"
#: Flush durations, in seconds: a DuckDB insert of a few thousand rows takes milliseconds,
#: a ClickHouse round trip over a network tens of them, a stalled store up to its timeout.
FLUSH_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Back-off after a failed write: the first retry after this, doubling, up to the cap.
RETRY_FIRST_S: Final = 0.1
RETRY_MAX_S: Final = 30.0
#: The rejection reason counted for events refused because the queue was full or closed.
QUEUE_FULL: Final = "queue_full"


@dataclass(frozen=True, slots=True)
class TelemetryMetrics:
    """Counts of every telemetry source and of the queue, on an injected registry."""

    accepted: Counter
    rejected: Counter
    flushed: Counter
    duplicates: Counter
    store_failures: Counter
    flush_seconds: Histogram
    # Labelled children by labels: prometheus_client's labels() validates and locks on every
    # call, and the middleware counts once per request.
    _children: dict[tuple[object, ...], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def register(
        cls, registry: CollectorRegistry, *, depth: Callable[[], float] | None = None
    ) -> TelemetryMetrics:
        """The metrics on ``registry``; ``depth`` (events waiting) is read at scrape time."""
        if depth is not None:
            gauge = Gauge(
                "telemetry_queue_depth",
                "Events accepted and not yet committed to the telemetry store.",
                namespace=NAMESPACE,
                registry=registry,
            )
            gauge.set_function(depth)
        return cls(
            accepted=Counter(
                "telemetry_events_accepted",
                "Telemetry events accepted (queued for the store), by source.",
                ["source"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            rejected=Counter(
                "telemetry_events_rejected",
                "Telemetry events rejected, by source and reason (a validation reason, or "
                "queue_full when the queue refused a batch).",
                ["source", "reason"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            flushed=Counter(
                "telemetry_events_flushed",
                "Events committed to the telemetry store.",
                namespace=NAMESPACE,
                registry=registry,
            ),
            duplicates=Counter(
                "telemetry_events_duplicate",
                "Committed events the store already held (same event id): redeliveries.",
                namespace=NAMESPACE,
                registry=registry,
            ),
            store_failures=Counter(
                "telemetry_store_failures",
                "Writes to the telemetry store that failed (the events stay queued and are "
                "retried).",
                namespace=NAMESPACE,
                registry=registry,
            ),
            flush_seconds=Histogram(
                "telemetry_flush_seconds",
                "Time to write one batch to the telemetry store.",
                namespace=NAMESPACE,
                buckets=FLUSH_BUCKETS,
                registry=registry,
            ),
        )

    def child(self, metric: Counter, *labels: str) -> Any:
        key = (id(metric), *labels)  # the metrics live as long as this object
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def count_accepted(self, count: int, *, source: str) -> None:
        if count:
            self.child(self.accepted, source).inc(count)

    def count_rejected(self, reasons: Mapping[str, int], *, source: str) -> None:
        for reason, count in reasons.items():
            if count:
                self.child(self.rejected, source, reason).inc(count)

    def count_rejections(self, rejections: Iterable[Rejection], *, source: str) -> None:
        self.count_rejected(collections.Counter(r.reason for r in rejections), source=source)


class TelemetryBatcher:
    """A bounded queue of accepted events in front of an :class:`EventStore`.

    Thread-safe: sources submit from the event loop (or any thread); the worker thread
    started by :meth:`start`, or the caller of :meth:`flush` / :meth:`close`, writes. The
    store is only ever called by one thread at a time, as its protocol asks.
    """

    def __init__(
        self,
        store: EventStore,
        registry: CollectorRegistry,
        *,
        batch_size: int = 10_000,
        flush_interval_s: float = 1.0,
        queue_max: int = 1_000_000,
        clock: Clock = monotonic,
        observers: Iterable[EventObserver] = (),
    ) -> None:
        if batch_size <= 0 or queue_max <= 0 or not flush_interval_s > 0:
            raise ValueError("batch_size, queue_max and flush_interval_s must be positive")
        self.store = store
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.queue_max = queue_max
        self._clock = clock
        # Guards every field below it; the worker waits on it.
        self._cond = threading.Condition()
        self._batches: list[EventBatch] = []
        self._events: list[Event] = []  # single events (the middleware), made columns at write
        self._pending = 0  # events in _batches and _events
        self._writing = 0  # events taken by a write that has not returned yet
        self._oldest: float | None = None  # when the oldest pending event was queued
        self._retry_at: float | None = None  # after a failed write: not before this
        self._failures_in_row = 0
        self._closed = False
        self._stopping = False
        self.last_error: str | None = None
        # One store call at a time; also makes a flush wait for a write in progress.
        self._store_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.observers = tuple(observers)
        # Batches a failed write put back: their events were observed already, and an
        # observer must see each event once however often its write is retried.
        self._observed: set[int] = set()
        self.metrics = TelemetryMetrics.register(registry, depth=lambda: float(self.depth))

    @classmethod
    def from_settings(
        cls,
        store: EventStore,
        settings: Settings,
        registry: CollectorRegistry,
        *,
        clock: Clock = monotonic,
        observers: Iterable[EventObserver] = (),
    ) -> TelemetryBatcher:
        return cls(
            store,
            registry,
            batch_size=settings.telemetry_batch_size,
            flush_interval_s=settings.telemetry_flush_interval_s,
            queue_max=settings.telemetry_queue_max,
            clock=clock,
            observers=observers,
        )

    # -- what sources call -------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Events accepted and not yet committed (queued, or being written)."""
        return self._pending + self._writing

    @property
    def retry_after_s(self) -> float:
        """What a refused sender is told to wait: about one write's worth of time."""
        if self._retry_at is not None:
            return max(1.0, self._retry_at - self._clock())
        return max(1.0, self.flush_interval_s)

    def submit(self, batch: EventBatch, *, source: str) -> None:
        """Queue a validated batch, all of it or (raising TelemetryQueueFull) none of it."""
        count = len(batch)
        if count == 0:
            return
        with self._cond:
            self._admit(count, source)
            self._batches.append(batch)
            self._queued(count)
        self.metrics.count_accepted(count, source=source)

    def submit_event(self, event: Event, *, source: str) -> None:
        """Queue one validated event (the middleware's path: no arrays per request)."""
        with self._cond:
            self._admit(1, source)
            self._events.append(event)
            self._queued(1)
        self.metrics.child(self.metrics.accepted, source).inc()

    def _admit(self, count: int, source: str) -> None:
        """Raise when ``count`` more events may not be queued. Holds ``_cond``."""
        if self._closed:
            message = "the telemetry queue is closed (the server is shutting down)"
        elif self._pending + self._writing + count > self.queue_max:
            message = (
                f"the telemetry queue is full ({self._pending + self._writing} of "
                f"{self.queue_max} events waiting for the store): retry later"
            )
        else:
            return
        self.metrics.child(self.metrics.rejected, source, QUEUE_FULL).inc(count)
        raise TelemetryQueueFull(message, retry_after_s=self.retry_after_s)

    def _queued(self, count: int) -> None:
        """Book ``count`` events just queued; wake the worker when that makes a write due
        or starts the interval. Holds ``_cond``."""
        was = self._pending
        self._pending = was + count
        if was == 0:
            self._oldest = self._clock()
            self._cond.notify()
        elif was < self.batch_size <= self._pending:
            self._cond.notify()

    # -- when and how to write -----------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether a write should start at ``now``: a full batch, or the oldest event has
        waited the flush interval, unless a failed write is backing off."""
        if self._pending == 0:
            return False
        if self._retry_at is not None and now < self._retry_at:
            return False
        if self._pending >= self.batch_size:
            return True
        return self._oldest is not None and now - self._oldest >= self.flush_interval_s

    def flush_if_due(self) -> int:
        """Write if :meth:`due`; the events written (0 if it was not due)."""
        with self._cond:
            if not self.due(self._clock()):
                return 0
        return self._write()

    def flush(self) -> int:
        """Write everything queued now; the events written.

        Raises TelemetryStoreError when the store fails; the events stay queued."""
        return self._write()

    def _write(self) -> int:
        with self._store_lock:
            with self._cond:
                batches, events = self._batches, self._events
                count, oldest = self._pending, self._oldest
                self._batches, self._events = [], []
                self._pending, self._oldest = 0, None
                self._writing += count
            if count == 0:
                return 0
            parts = [*batches, EventBatch.from_events(events)] if events else batches
            self._observe(parts)
            batch = parts[0] if len(parts) == 1 else EventBatch.concat(parts)
            started = self._clock()
            try:
                new = self.store.insert(batch)
            except Exception as exc:
                self._failed(batch, count, oldest, exc)
                if isinstance(exc, TelemetryStoreError):
                    raise
                raise TelemetryStoreError(f"telemetry store insert failed: {exc}") from exc
            elapsed = self._clock() - started
            self._observed.discard(id(batch))
            with self._cond:
                self._writing -= count
                self._failures_in_row = 0
                self._retry_at = None
                self.last_error = None
        self.metrics.flush_seconds.observe(max(0.0, elapsed))
        self.metrics.flushed.inc(count)
        if count > new:
            self.metrics.duplicates.inc(count - new)
        return count

    def _observe(self, parts: list[EventBatch]) -> None:
        """Show the observers every part not seen before. Holds ``_store_lock``."""
        if not self.observers:
            return
        for part in parts:
            if id(part) in self._observed:
                self._observed.discard(id(part))
                continue
            for observer in self.observers:
                try:
                    observer.observe(part)
                except Exception:
                    # Online features are advisory; a bug there must not stop the writes.
                    log.exception("telemetry observer %r failed", observer)

    def _failed(self, batch: EventBatch, count: int, oldest: float | None, exc: Exception) -> None:
        """Put a batch whose write failed back at the head of the queue, and back off."""
        self.metrics.store_failures.inc()
        self._observed.add(id(batch))
        with self._cond:
            self._batches.insert(0, batch)
            self._writing -= count
            self._pending += count
            if oldest is not None:
                self._oldest = oldest if self._oldest is None else min(oldest, self._oldest)
            self._failures_in_row += 1
            backoff = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._failures_in_row - 1))
            self._retry_at = self._clock() + backoff
            self.last_error = f"{type(exc).__name__}: {exc}"
            failures = self._failures_in_row
        log.warning(
            "telemetry store write of %d events failed (%d in a row; retry in %.1f s): %s",
            count,
            failures,
            backoff,
            exc,
        )

    # -- the worker and its lifetime --------------------------------------------------------

    def start(self) -> TelemetryBatcher:
        """Start the worker thread that writes when :meth:`due`."""
        if self._thread is None:
            # Daemon: a store that hangs must not keep the process alive after close()
            # gave up on it; close() is what writes the queue, never interpreter exit.
            self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
            self._thread.start()
        return self

    def _wait_s(self, now: float) -> float | None:
        """How long the worker may sleep before a write can be due. Holds ``_cond``."""
        if self._pending == 0:
            return None  # _queued() wakes it
        if self._retry_at is not None:
            wait = self._retry_at - now
        elif self._oldest is not None:
            wait = self._oldest + self.flush_interval_s - now
        else:
            wait = self.flush_interval_s
        # A clock that does not move (a fake one) must not make the worker spin.
        return min(max(wait, 0.001), max(self.flush_interval_s, RETRY_MAX_S))

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = self._clock()
                    if self.due(now):
                        break
                    self._cond.wait(self._wait_s(now))
            try:
                self._write()
            except TelemetryStoreError:
                pass  # logged by _failed; the events are queued again and retried
            except Exception:  # a bug must not kill the only writer
                log.exception("telemetry worker")

    def close(self, *, timeout_s: float = 10.0) -> None:
        """Refuse new events, stop the worker and write everything queued.

        A failing store is retried for up to ``timeout_s``; past that this raises
        TelemetryStoreError naming how many events could not be written."""
        with self._cond:
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        # Real time, not the injected clock: this loop really sleeps, and a shutdown must
        # end even under a clock that does not move.
        deadline = time.monotonic() + timeout_s
        pause = RETRY_FIRST_S
        while self.depth:
            try:
                self.flush()
            except TelemetryStoreError as exc:
                if time.monotonic() + pause > deadline:
                    lost = self.depth
                    log.error("telemetry: %d accepted events could not be written: %s", lost, exc)
                    raise TelemetryStoreError(
                        f"{lost} accepted telemetry events could not be written to the store "
                        f"within {timeout_s:g} s: {exc}"
                    ) from exc
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def ping(self) -> bool:
        """Whether the store answers, for ``/readyz``. A write in progress answers for it:
        ping would wait behind it, and a write that is succeeding is proof enough."""
        if not self._store_lock.acquire(timeout=0.5):
            return self._failures_in_row == 0
        try:
            return bool(self.store.ping())
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        finally:
            self._store_lock.release()

    def __enter__(self) -> TelemetryBatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds; round up so a client never comes back early."""
    return str(max(1, math.ceil(seconds)))
