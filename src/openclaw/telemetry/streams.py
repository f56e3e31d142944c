"""Telemetry from a Redis Stream, through a consumer group: at-least-once, exactly once in
the store.

Entry format: one field, ``event``, holding one event as a JSON object of the event schema
(``openclaw.telemetry.events``); producers ``XADD <stream> * event '<json>'`` (see
:func:`publish`). An event without ``event_id`` gets one derived from the stream and the
entry id, so a redelivered entry keeps its id.

The consumer (``openclaw ingest --from redis://...``):

* creates the group if missing (``XGROUP CREATE <stream> <group> 0 MKSTREAM``; an existing
  group is left as it is);
* on start, and after any Redis error, first re-reads its own pending entries (id ``0``:
  delivered to this consumer name before and never acknowledged, because it crashed), then
  claims entries other consumers left pending for longer than ``claim_idle_s``
  (``XAUTOCLAIM``), then reads new ones (``>``);
* validates every entry: a bad one (not JSON, not an event, no ``event`` field) is counted,
  recorded in the dead-letter stream ``<stream>:rejected`` (fields ``entry``, ``reason``,
  ``detail``, ``raw``) and acknowledged, so it is not retried forever;
* inserts the good ones into the store, and only once the insert has returned (committed)
  acknowledges the batch (``XACK``, in one ``MULTI`` with the dead-letter records). A crash
  between the two redelivers the batch; the store's insert is idempotent on ``event_id``,
  so it is stored once. A store that fails is retried, the batch unacknowledged meanwhile.

Stopping (SIGTERM, SIGINT) lets the batch in hand finish, be acknowledged, and the consumer
return; ``idle_exit_s`` makes it return when nothing arrived for that long (a DuckDB file is
locked by its writer, so a batch job must end before anything else can read the file).
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson
from prometheus_client import CollectorRegistry

from openclaw.clock import Clock, monotonic
from openclaw.errors import EventRejected, IngestError, TelemetryStoreError
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.batcher import TelemetryMetrics
from openclaw.telemetry.events import (
    Event,
    EventBatch,
    event_id_prefix,
    validate_event,
)

if TYPE_CHECKING:
    import redis

__all__ = [
    "ENTRY_FIELD",
    "BatchResult",
    "ConsumerStats",
    "StreamConsumer",
    "dead_letter_stream",
    "event_record",
    "parse_entries",
    "publish",
]

log = logging.getLogger(__name__)

#: The one field of an entry; its value is the event's JSON.
ENTRY_FIELD: Final = "event"
_ENTRY_FIELD_BYTES: Final = ENTRY_FIELD.encode()
SOURCE: Final = "redis"
#: How much of a rejected entry's value the dead-letter record keeps.
MAX_DEAD_LETTER_RAW: Final = 65_536
#: Back-off after a Redis or store failure: first pause, doubling, up to the cap.
RETRY_FIRST_S: Final = 0.1
RETRY_MAX_S: Final = 5.0

Entry = tuple[bytes, Mapping[bytes, bytes] | None]


def dead_letter_stream(stream: str) -> str:
    return f"{stream}:rejected"


def event_record(event: Event) -> dict[str, Any]:
    """An event as the JSON object of the event schema (what producers put in an entry).

    A float of seconds carries the microseconds exactly at today's epochs: its error and
    that of the product by 10^6 stay well under half a microsecond."""
    record: dict[str, Any] = {
        "event_id": event.event_id,
        "client_id": event.client_id,
        "timestamp": event.ts_us / 1e6,
        "status_code": event.status_code,
    }
    if event.response_time_ms is not None:
        record["response_time_ms"] = event.response_time_ms
    if event.route is not None:
        record["route"] = event.route
    if event.method is not None:
        record["method"] = event.method
    if event.bytes is not None:
        record["bytes"] = event.bytes
    return record


def publish(
    client: redis.Redis,
    stream: str,
    items: Iterable[Event | Mapping[str, Any] | bytes | str],
    *,
    chunk: int = 1000,
) -> list[str]:
    """Add entries to ``stream`` in pipelined chunks; their ids, in order.

    An :class:`Event` or a mapping becomes the entry's JSON; bytes or a string are sent as
    they are (tests use that to publish bad entries)."""
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    pending = 0
    for item in items:
        if isinstance(item, Event):
            value: bytes | str = orjson.dumps(event_record(item))
        elif isinstance(item, bytes | str):
            value = item
        else:
            value = orjson.dumps(dict(item))
        pipe.xadd(stream, {ENTRY_FIELD: value})
        pending += 1
        if pending >= chunk:
            ids.extend(_text(i) for i in pipe.execute())
            pending = 0
    if pending:
        ids.extend(_text(i) for i in pipe.execute())
    return ids


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- the pure part: entries to events --------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryRejection:
    entry_id: str
    reason: str
    detail: str
    raw: bytes


def parse_entries(
    entries: Sequence[Entry], *, stream: str, max_client_id_length: int
) -> tuple[EventBatch, list[EntryRejection]]:
    """Validate stream entries; the good ones as a batch, the bad ones with why."""
    prefix = event_id_prefix(f"redis\0{stream}")
    events: list[Event] = []
    rejected: list[EntryRejection] = []
    for raw_id, fields in entries:
        entry_id = _text(raw_id)
        value = fields.get(_ENTRY_FIELD_BYTES) if fields else None
        if value is None:
            detail = (
                "the entry was deleted from the stream before it was read"
                if not fields
                else f"the entry has no {ENTRY_FIELD!r} field (fields: "
                + ", ".join(sorted(_text(k) for k in fields))[:200]
                + ")"
            )
            rejected.append(EntryRejection(entry_id, "missing_field", detail, b""))
            continue
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            rejected.append(EntryRejection(entry_id, "bad_json", f"not JSON: {exc.msg}", value))
            continue
        try:
            events.append(
                validate_event(
                    record,
                    max_client_id_length=max_client_id_length,
                    default_event_id=prefix + entry_id,
                )
            )
        except EventRejected as exc:
            rejected.append(EntryRejection(entry_id, exc.reason, exc.detail, value))
    return EventBatch.from_events(events), rejected


# -- the consumer ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One acknowledged batch: entries read, events stored (new), duplicates (already in
    the store: a redelivery), and the rejected entries by reason."""

    entries: int
    stored: int
    duplicates: int
    rejected: Mapping[str, int]


@dataclass
class ConsumerStats:
    entries: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    batches: int = 0
    #: Why the consumer returned: "stopped", "idle" or "failed".
    ended: str = ""

    def add(self, result: BatchResult) -> None:
        self.entries += result.entries
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.rejected.update(result.rejected)
        self.batches += 1


class StreamConsumer:
    """One consumer of a group. Blocking; call :meth:`run` from one thread."""

    def __init__(
        self,
        client: redis.Redis,
        store: EventStore,
        *,
        stream: str,
        group: str,
        consumer: str,
        registry: CollectorRegistry | None = None,
        batch_size: int = 1000,
        block_ms: int = 500,
        claim_idle_s: float = 60.0,
        max_client_id_length: int = 256,
        clock: Clock = monotonic,
    ) -> None:
        if batch_size <= 0 or block_ms <= 0:
            raise ValueError("batch_size and block_ms must be positive")
        self.client = client
        self.store = store
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_s = claim_idle_s
        self.max_client_id_length = max_client_id_length
        self.dead_letter = dead_letter_stream(stream)
        self.metrics = TelemetryMetrics.register(registry or CollectorRegistry())
        self._clock = clock

    # -- Redis steps --------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; an existing group is kept as is."""
        import redis

        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, start: str, *, block: bool) -> list[Entry]:
        """Entries from ``start`` (``>`` new ones; an id: this consumer's pending ones)."""
        reply = self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: start},
            count=self.batch_size,
            block=self.block_ms if block else None,
        )
        return _entries(reply)

    def claim(self, cursor: str) -> tuple[str, list[Entry]]:
        """Entries other consumers left pending for ``claim_idle_s``, now this one's."""
        reply = self.client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=round(self.claim_idle_s * 1000),
            start_id=cursor,
            count=self.batch_size,
        )
        next_cursor, claimed = _text(reply[0]), reply[1]
        return next_cursor, [(i, f) for i, f in claimed]

    def commit(self, entries: Sequence[Entry], *, stop: threading.Event) -> BatchResult | None:
        """Store the batch's events, then record its rejects and acknowledge it all.

        A failing store is retried until it commits or ``stop`` is set (then None: nothing
        acknowledged, the entries stay pending for the next run)."""
        batch, rejected = parse_entries(
            entries, stream=self.stream, max_client_id_length=self.max_client_id_length
        )
        new = self._insert(batch, stop=stop)
        if new is None:
            return None
        pipe = self.client.pipeline(transaction=True)
        for r in rejected:
            pipe.xadd(
                self.dead_letter,
                {
                    "entry": r.entry_id,
                    "reason": r.reason,
                    "detail": r.detail,
                    "raw": r.raw[:MAX_DEAD_LETTER_RAW],
                },
            )
        pipe.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])
        pipe.execute()
        reasons = collections.Counter(r.reason for r in rejected)
        self.metrics.count_rejected(reasons, source=SOURCE)
        self.metrics.count_accepted(len(batch), source=SOURCE)
        for r in rejected:
            log.warning("%s %s rejected: %s: %s", self.stream, r.entry_id, r.reason, r.detail)
        return BatchResult(len(entries), new, len(batch) - new, reasons)

    def _insert(self, batch: EventBatch, *, stop: threading.Event) -> int | None:
        if len(batch) == 0:
            return 0
        pause = RETRY_FIRST_S
        while True:
            started = self._clock()
            try:
                new = self.store.insert(batch)
            except TelemetryStoreError as exc:
                self.metrics.store_failures.inc()
                log.warning("telemetry store insert failed (retry in %.1f s): %s", pause, exc)
                if stop.wait(pause):
                    return None
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            self.metrics.flush_seconds.observe(max(0.0, self._clock() - started))
            self.metrics.flushed.inc(len(batch))
            if len(batch) > new:
                self.metrics.duplicates.inc(len(batch) - new)
            return new

    # -- the loop -----------------------------------------------------------------------

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        idle_exit_s: float | None = None,
        on_batch: Callable[[BatchResult, ConsumerStats], None] | None = None,
    ) -> ConsumerStats:
        """Consume until ``stop`` is set or nothing arrived for ``idle_exit_s``.

        Redis errors are retried (each time from this consumer's pending entries again);
        a batch read is always finished, stored and acknowledged before this returns,
        unless the store keeps failing past ``stop``."""
        import redis

        stop = stop or threading.Event()
        stats = ConsumerStats()
        pause = RETRY_FIRST_S
        recovering = True  # re-read pending entries first: on start and after an error
        last_seen = self._clock()
        while not stop.is_set():
            try:
                if recovering:
                    self.ensure_group()
                    if not self._recover(stats, stop=stop, on_batch=on_batch):
                        break
                    recovering = False
                    last_seen = self._clock()
                entries = self.read(">", block=True)
                if entries:
                    last_seen = self._clock()
                    if not self._commit(entries, stats, stop=stop, on_batch=on_batch):
                        break
                elif idle_exit_s is not None and self._clock() - last_seen >= idle_exit_s:
                    stats.ended = "idle"
                    return stats
                pause = RETRY_FIRST_S
            except redis.RedisError as exc:
                # Whatever was read and not acknowledged is still pending: read it again
                # (a batch already stored is stored once more as nothing new).
                log.warning("redis: %s (retry in %.1f s)", exc, pause)
                recovering = True
                if stop.wait(pause):
                    break
                pause = min(pause * 2, RETRY_MAX_S)
        stats.ended = stats.ended or "stopped"
        return stats

    def _recover(
        self,
        stats: ConsumerStats,
        *,
        stop: threading.Event,
        on_batch: Callable[[BatchResult, ConsumerStats], None] | None,
    ) -> bool:
        """This consumer's pending entries, then stale ones of others; False when a batch
        could not be committed before ``stop``."""
        start = "0"
        while not stop.is_set():
            entries = self.read(start, block=False)
            if not entries:
                break
            if not self._commit(entries, stats, stop=stop, on_batch=on_batch):
                return False
            start = _text(entries[-1][0])
        cursor = "0-0"
        while not stop.is_set():
            cursor, entries = self.claim(cursor)
            if entries and not self._commit(entries, stats, stop=stop, on_batch=on_batch):
                return False
            if cursor == "0-0":
                break
        return True

    def _commit(
        self,
        entries: Sequence[Entry],
        stats: ConsumerStats,
        *,
        stop: threading.Event,
        on_batch: Callable[[BatchResult, ConsumerStats], None] | None,
    ) -> bool:
        result = self.commit(entries, stop=stop)
        if result is None:
            stats.ended = "failed"
            return False
        stats.add(result)
        if on_batch is not None:
            on_batch(result, stats)
        return True


def _entries(reply: Any) -> list[Entry]:
    """XREADGROUP's reply (RESP2 list or RESP3 dict) as one stream's entries."""
    if not reply:
        return []
    entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    return [(i, f) for i, f in entries]


def connect(url: str, *, timeout_s: float = 10.0) -> redis.Redis:
    """A redis-py client for a ``redis://`` / ``rediss://`` / ``unix://`` URL."""
    try:
        import redis
    except ImportError as exc:
        raise IngestError(
            "reading a Redis stream needs the 'redis' extra: pip install 'openclaw[redis]'"
        ) from exc
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise IngestError(f"--from {url!r}: expected redis://HOST:PORT/DB (or rediss://, unix://)")
    try:
        # The socket timeout must outlast a blocking XREADGROUP.
        return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=5)
    except ValueError as exc:
        raise IngestError(f"--from {url!r}: {exc}") from exc


def run_consumer(
    url: str,
    *,
    stream: str,
    group: str,
    consumer: str,
    store_url: str,
    settings: Settings,
    idle_exit_s: float | None = None,
    batch_size: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> ConsumerStats:
    """``openclaw ingest --from redis://...``: consume until SIGTERM or SIGINT (the batch in
    hand is finished and acknowledged first) or ``idle_exit_s`` without a new entry.

    ``progress`` gets one line per acknowledged batch."""
    from openclaw.telemetry.stores import open_event_store

    client = connect(url)
    try:
        client.ping()
    except Exception as exc:  # redis.RedisError, but redis is imported lazily
        client.close()
        raise IngestError(f"--from {url}: Redis does not answer: {exc}") from exc
    store = open_event_store(store_url, settings=settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def report(result: BatchResult, stats: ConsumerStats) -> None:
        if progress is not None:
            progress(
                f"acknowledged {result.entries} entries ({result.stored} stored, "
                f"{result.duplicates} duplicates, {sum(result.rejected.values())} rejected); "
                f"total {stats.entries} entries, {stats.stored} stored"
            )

    try:
        return StreamConsumer(
            client,
            store,
            stream=stream,
            group=group,
            consumer=consumer,
            batch_size=batch_size,
            max_client_id_length=settings.max_client_id_length,
        ).run(stop=stop, idle_exit_s=idle_exit_s, on_batch=report)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()
        client.close()
