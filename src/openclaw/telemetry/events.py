"""The telemetry event: its schema, its validation, and the columnar batch stores take.

Validation is a pure function of one decoded record; every source (HTTP NDJSON, the ASGI
middleware, log import, Redis Streams) goes through it, so an event means the same thing
whichever way it arrived. A bad event raises :class:`EventRejected` with a machine-readable
reason; callers count it and go on with the rest of their batch.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from openclaw.errors import EventRejected

#: Why an event was rejected. Sources count rejections by these codes.
RejectReason = Literal[
    "bad_json",  # the line or record is not a JSON object
    "bad_line",  # a log line that does not parse in the declared format
    "missing_field",  # a required field is absent or null
    "bad_type",  # a field has the wrong type
    "bad_timestamp",  # not a parseable time, or outside the plausible range
    "out_of_range",  # a number outside its range (status, response time, bytes)
    "too_long",  # a string field longer than allowed
    "unknown_field",  # a field the schema does not have (a typo should not pass silently)
]

FIELDS: Final = (
    "event_id",
    "client_id",
    "timestamp",
    "response_time_ms",
    "status_code",
    "route",
    "method",
    "bytes",
)
#: Timestamps before 1990 or after 2100 are typos (milliseconds for seconds, say), not events.
MIN_TS_US: Final = 631_152_000_000_000
MAX_TS_US: Final = 4_102_444_800_000_000
#: The same bounds in seconds, one second wider, to check a number before scaling it.
MIN_TS_S: Final = MIN_TS_US // 1_000_000 - 1
MAX_TS_S: Final = MAX_TS_US // 1_000_000 + 1
MAX_RESPONSE_TIME_MS: Final = 86_400_000.0
MAX_EVENT_ID_LENGTH: Final = 128
MAX_ROUTE_LENGTH: Final = 2048
MAX_METHOD_LENGTH: Final = 16
#: Sentinels of the columnar batch: numpy has no nullable ints, so "unknown" is a value.
UNKNOWN_BYTES: Final = -1


@dataclass(frozen=True, slots=True)
class Event:
    """One request the protected API served.

    ``ts_us`` is the timestamp in whole microseconds since the Unix epoch (UTC): integers
    compare and group exactly in every store, where floats would not. ``response_time_ms``
    is None when the source does not record it (access logs don't).
    """

    event_id: str
    client_id: str
    ts_us: int
    status_code: int
    response_time_ms: float | None = None
    route: str | None = None
    method: str | None = None
    bytes: int | None = None

    @property
    def timestamp(self) -> float:
        """Seconds since the epoch (UTC)."""
        return self.ts_us / 1e6


def event_id_prefix(source: str | bytes) -> str:
    """The shared start of the derived ids of one source: hash it once, not once per line."""
    data = source.encode() if isinstance(source, str) else source
    return f"L{hashlib.blake2b(data, digest_size=12).hexdigest()}:"


def derived_event_id(source: str | bytes, line: int) -> str:
    """A stable id for line ``line`` of ``source``: importing a file twice stores it once.

    Bulk sources build the same ids as ``event_id_prefix(source) + str(line)``.
    """
    return f"{event_id_prefix(source)}{line}"


def random_event_id() -> str:
    return uuid.uuid4().hex


def parse_timestamp(value: object) -> int:
    """Epoch seconds (int or float) or an RFC 3339 / ISO 8601 string, to epoch microseconds.

    A string without a UTC offset is rejected: guessing the zone would shift a client's
    whole history by hours.
    """
    if isinstance(value, bool):
        raise EventRejected("bad_timestamp", "timestamp must be a number or an RFC 3339 string")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise EventRejected("bad_timestamp", "timestamp must be finite")
        # Checked in seconds first: 1e306 seconds would overflow to an infinite microsecond.
        if not MIN_TS_S <= value <= MAX_TS_S:
            raise EventRejected("bad_timestamp", "timestamp is outside 1990..2100")
        ts_us = round(value * 1_000_000)
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise EventRejected(
                "bad_timestamp", f"timestamp {value[:64]!r} is not RFC 3339"
            ) from None
        if parsed.tzinfo is None:
            raise EventRejected("bad_timestamp", f"timestamp {value[:64]!r} has no UTC offset")
        ts_us = round(parsed.timestamp() * 1_000_000)
    else:
        raise EventRejected("bad_timestamp", "timestamp must be a number or an RFC 3339 string")
    if not MIN_TS_US <= ts_us <= MAX_TS_US:
        raise EventRejected("bad_timestamp", "timestamp is outside 1990..2100")
    return ts_us


def _string(record: Mapping[str, Any], name: str, limit: int, *, required: bool) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            raise EventRejected("missing_field", f"{name} is required")
        return None
    if not isinstance(value, str):
        raise EventRejected("bad_type", f"{name} must be a string")
    if required and not value:
        raise EventRejected("missing_field", f"{name} must not be empty")
    if len(value) > limit:
        raise EventRejected("too_long", f"{name} is longer than {limit} characters")
    return value


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventRejected("bad_type", f"{name} must be a number")
    return float(value)


def _integer(value: object, name: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventRejected("bad_type", f"{name} must be an integer")
    if not low <= value <= high:
        raise EventRejected("out_of_range", f"{name} must be within {low}..{high}")
    return value


def validate_event(
    record: object,
    *,
    max_client_id_length: int = 256,
    require_response_time: bool = True,
    default_event_id: str | None = None,
) -> Event:
    """Check one decoded record (a JSON object) and build the event, or raise EventRejected.

    ``default_event_id`` is used when the record carries none (a derived id for a log line);
    without either, a random id is drawn, which makes the event unique but not idempotent.
    """
    if not isinstance(record, Mapping):
        raise EventRejected("bad_json", "an event must be a JSON object")
    unknown = [key for key in record if key not in FIELDS]
    if unknown:
        raise EventRejected("unknown_field", f"unknown field {str(unknown[0])[:64]!r}")
    client_id = _string(record, "client_id", max_client_id_length, required=True)
    assert client_id is not None  # required=True
    event_id = _string(record, "event_id", MAX_EVENT_ID_LENGTH, required=False)
    if event_id is None:
        event_id = default_event_id or random_event_id()
    elif not event_id:
        raise EventRejected("missing_field", "event_id must not be empty")
    if record.get("timestamp") is None:
        raise EventRejected("missing_field", "timestamp is required")
    ts_us = parse_timestamp(record["timestamp"])

    status = _integer(record.get("status_code"), "status_code", 100, 599)
    if status is None:
        raise EventRejected("missing_field", "status_code is required")
    rt_raw = record.get("response_time_ms")
    response_time: float | None = None
    if rt_raw is not None:
        response_time = _number(rt_raw, "response_time_ms")
        if not 0.0 <= response_time <= MAX_RESPONSE_TIME_MS:
            raise EventRejected("out_of_range", "response_time_ms must be within 0..86400000")
    elif require_response_time:
        raise EventRejected("missing_field", "response_time_ms is required")
    size = _integer(record.get("bytes"), "bytes", 0, 2**62)
    method = _string(record, "method", MAX_METHOD_LENGTH, required=False)
    return Event(
        event_id=event_id,
        client_id=client_id,
        ts_us=ts_us,
        status_code=status,
        response_time_ms=response_time,
        route=_string(record, "route", MAX_ROUTE_LENGTH, required=False),
        method=method.upper() if method else None,
        bytes=size,
    )


@dataclass(frozen=True, slots=True)
class Rejection:
    """One rejected event: where it came from (file and 1-based line, or batch position)."""

    source: str
    line: int
    reason: RejectReason
    detail: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}: {self.detail}"


ObjArray = npt.NDArray[np.object_]


@dataclass(frozen=True, slots=True, eq=False)
class EventBatch:
    """Events as columns, the form every store inserts (one array per field, equal lengths).

    Unknowns: ``response_time_ms`` NaN, ``bytes`` -1, ``route``/``method`` None.
    """

    event_id: ObjArray
    client_id: ObjArray
    ts_us: npt.NDArray[np.int64]
    status_code: npt.NDArray[np.int16]
    response_time_ms: npt.NDArray[np.float64]
    route: ObjArray
    method: ObjArray
    bytes: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def from_events(cls, events: Sequence[Event]) -> EventBatch:
        return cls(
            event_id=object_array(e.event_id for e in events),
            client_id=object_array(e.client_id for e in events),
            ts_us=np.fromiter((e.ts_us for e in events), np.int64, len(events)),
            status_code=np.fromiter((e.status_code for e in events), np.int16, len(events)),
            response_time_ms=np.fromiter(
                (math.nan if e.response_time_ms is None else e.response_time_ms for e in events),
                np.float64,
                len(events),
            ),
            route=object_array(e.route for e in events),
            method=object_array(e.method for e in events),
            bytes=np.fromiter(
                (UNKNOWN_BYTES if e.bytes is None else e.bytes for e in events),
                np.int64,
                len(events),
            ),
        )

    @classmethod
    def empty(cls) -> EventBatch:
        return cls.from_events(())

    @classmethod
    def concat(cls, batches: Sequence[EventBatch]) -> EventBatch:
        if not batches:
            return cls.empty()
        return cls(
            **{name: np.concatenate([getattr(b, name) for b in batches]) for name in cls.__slots__}
        )

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_] | slice) -> EventBatch:
        """The rows at ``index`` (a slice, integer positions or a boolean mask)."""
        return EventBatch(**{name: getattr(self, name)[index] for name in self.__slots__})

    def events(self) -> Iterator[Event]:
        for i in range(len(self)):
            rt = float(self.response_time_ms[i])
            size = int(self.bytes[i])
            yield Event(
                event_id=str(self.event_id[i]),
                client_id=str(self.client_id[i]),
                ts_us=int(self.ts_us[i]),
                status_code=int(self.status_code[i]),
                response_time_ms=None if math.isnan(rt) else rt,
                route=self.route[i],
                method=self.method[i],
                bytes=None if size == UNKNOWN_BYTES else size,
            )


def object_array(values: Iterable[object]) -> ObjArray:
    """Values as a one-dimensional object array (``np.array`` would make strings fixed-width
    and tuples a second dimension)."""
    items = values if isinstance(values, list) else list(values)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
