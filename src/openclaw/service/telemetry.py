"""``POST /api/v1/telemetry``: NDJSON batches of events into the telemetry queue.

One event per line, each a JSON object of the event schema (``openclaw.telemetry.events``).
Every line is judged on its own: bad lines are rejected with their line number and reason,
the good ones of the same body are accepted. The answer is ``202`` with
``{"accepted", "rejected", "errors": [{"line", "reason", "detail"}]}`` (the first
:data:`MAX_REPORTED_ERRORS` errors); ``400`` when no line holds a JSON object at all (the
body is not NDJSON); ``413`` past ``telemetry_max_body_bytes``, before the body is read
whole; ``415`` for a Content-Type other than NDJSON's (``application/x-ndjson``; also
``application/ndjson``, ``application/jsonl``, ``application/json``, or none); ``503`` with
``Retry-After`` when the queue is full (nothing of that body was taken).

Events without an ``event_id`` get one made of a random per-request prefix and the line
number: unique, but a client that retries a body gets new ids, so clients that retry
should send ids of their own (the stores are idempotent on them).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from openclaw.errors import EventRejected, RequestError, TelemetryQueueFull
from openclaw.telemetry.batcher import TelemetryBatcher, retry_after_header
from openclaw.telemetry.events import (
    FIELDS,
    MAX_EVENT_ID_LENGTH,
    MAX_METHOD_LENGTH,
    MAX_RESPONSE_TIME_MS,
    MAX_ROUTE_LENGTH,
    MAX_TS_S,
    MAX_TS_US,
    MIN_TS_S,
    MIN_TS_US,
    UNKNOWN_BYTES,
    EventBatch,
    Rejection,
    object_array,
    validate_event,
)

__all__ = ["MAX_REPORTED_ERRORS", "ParsedBody", "TelemetryEndpoint", "parse_ndjson"]

SOURCE: Final = "http"
#: Errors listed in an answer; the rest are only counted (a body of 100,000 bad lines must
#: not produce an answer bigger than itself).
MAX_REPORTED_ERRORS: Final = 100
#: Bodies larger than this are parsed in a worker thread: a 16 MiB body is about a tenth of a
#: second of parsing, which must not stall every other request on the event loop meanwhile.
THREAD_PARSE_BYTES: Final = 256 * 1024
#: Content types of a body (the parameters after ";" aside); none at all is taken as NDJSON.
#: Anything else is refused (415): a form or plain text posted here by mistake must not be
#: read as events.
MEDIA_TYPES: Final = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/json",
    }
)
_FIELDS: Final = frozenset(FIELDS)
_MAX_BYTES: Final = 2**62


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """The accepted events of a body as columns, and the rejected lines."""

    batch: EventBatch
    rejections: list[Rejection]
    #: Lines that held a JSON object, valid or not: 0 means the body is not NDJSON.
    objects: int


def parse_ndjson(body: bytes, *, max_client_id_length: int, id_prefix: str) -> ParsedBody:
    """Validate each line of an NDJSON body; line numbers are 1-based, blank lines count.

    The common line (numbers for times, every field of the right type) is checked inline
    and goes straight into columns; anything else goes through ``validate_event``, so every
    rejection reason and message is that function's, and a line the inline checks are unsure
    of is still judged by it. A test holds the two paths to the same results.
    """
    # One list per column, appended to in place: a tuple per row transposed at the end
    # costs a third more.
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [])
    ids, clients, stamps, statuses, times, routes, methods, sizes = columns
    rejections: list[Rejection] = []
    objects = 0
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    fields = _FIELDS
    max_id = MAX_EVENT_ID_LENGTH
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line or line.isspace():
            continue
        try:
            record = loads(line)
        except decode_error as exc:
            rejections.append(Rejection(SOURCE, number, "bad_json", f"not JSON: {exc.msg}"))
            continue
        if type(record) is not dict:
            kind = "an array" if type(record) is list else "not an object"
            rejections.append(
                Rejection(SOURCE, number, "bad_json", f"an event must be a JSON object, got {kind}")
            )
            continue
        objects += 1
        # -- inline checks of the common line; any doubt falls through to validate_event
        client = record.get("client_id")
        ts = record.get("timestamp")
        status = record.get("status_code")
        rt = record.get("response_time_ms")
        event_id = record.get("event_id")
        route = record.get("route")
        method = record.get("method")
        size = record.get("bytes")
        if (
            record.keys() <= fields
            and type(client) is str
            and 0 < len(client) <= max_client_id_length
            and (type(ts) is float or type(ts) is int)
            and MIN_TS_S <= ts <= MAX_TS_S
            and type(status) is int
            and 100 <= status <= 599
            and (type(rt) is float or type(rt) is int)
            and 0.0 <= rt <= MAX_RESPONSE_TIME_MS
            and (event_id is None or (type(event_id) is str and 0 < len(event_id) <= max_id))
            and (route is None or (type(route) is str and len(route) <= MAX_ROUTE_LENGTH))
            and (method is None or (type(method) is str and len(method) <= MAX_METHOD_LENGTH))
            and (size is None or (type(size) is int and 0 <= size <= _MAX_BYTES))
        ):
            ts_us = round(ts * 1_000_000)  # what parse_timestamp does with a number
            # The bounds in seconds (which also keep NaN and 1e306 out) are a second wider.
            if MIN_TS_US <= ts_us <= MAX_TS_US:
                ids.append(event_id if event_id is not None else f"{id_prefix}{number}")
                clients.append(client)
                stamps.append(ts_us)
                statuses.append(status)
                times.append(float(rt))
                routes.append(route)
                methods.append(method.upper() if method else None)
                sizes.append(UNKNOWN_BYTES if size is None else size)
                continue
        row = _validated(record, number, max_client_id_length, id_prefix)
        if isinstance(row, Rejection):
            rejections.append(row)
        else:
            for column, value in zip(columns, row, strict=True):
                column.append(value)
    return ParsedBody(_batch(columns), rejections, objects)


def _validated(
    record: dict[str, Any], number: int, max_client_id_length: int, id_prefix: str
) -> tuple[Any, ...] | Rejection:
    """One record through ``validate_event``: its row, or why it is rejected."""
    try:
        event = validate_event(
            record,
            max_client_id_length=max_client_id_length,
            default_event_id=f"{id_prefix}{number}",
        )
    except EventRejected as exc:
        return Rejection(SOURCE, number, exc.reason, exc.detail)  # type: ignore[arg-type]
    return (
        event.event_id,
        event.client_id,
        event.ts_us,
        event.status_code,
        math.nan if event.response_time_ms is None else event.response_time_ms,
        event.route,
        event.method,
        UNKNOWN_BYTES if event.bytes is None else event.bytes,
    )


def _batch(columns: tuple[list[Any], ...]) -> EventBatch:
    ids, clients, stamps, statuses, times, routes, methods, sizes = columns
    return EventBatch(
        event_id=object_array(ids),
        client_id=object_array(clients),
        ts_us=np.array(stamps, dtype=np.int64),
        status_code=np.array(statuses, dtype=np.int16),
        response_time_ms=np.array(times, dtype=np.float64),
        route=object_array(routes),
        method=object_array(methods),
        bytes=np.array(sizes, dtype=np.int64),
    )


def error_list(rejections: Sequence[Rejection]) -> list[dict[str, object]]:
    return [
        {"line": r.line, "reason": r.reason, "detail": r.detail}
        for r in rejections[:MAX_REPORTED_ERRORS]
    ]


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


async def read_body(request: Request, limit: int, *, advice: str = "") -> bytes:
    """The whole body; 413 past ``limit`` bytes (its reason ends with ``advice``), from
    Content-Length before reading any of it, or as soon as the bytes read pass it."""
    too_large = RequestError(
        f"the body is larger than {limit} bytes{advice}", status=413, code="body_too_large"
    )
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RequestError("Content-Length is not a number")
        if int(length) > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class TelemetryEndpoint:
    """The endpoint, bound to the queue (None: telemetry is not configured, 503)."""

    def __init__(
        self, batcher: TelemetryBatcher | None, *, max_body_bytes: int, max_client_id_length: int
    ) -> None:
        self.batcher = batcher
        self.max_body_bytes = max_body_bytes
        self.max_client_id_length = max_client_id_length

    def parse(self, body: bytes) -> ParsedBody:
        return parse_ndjson(
            body,
            max_client_id_length=self.max_client_id_length,
            id_prefix=f"h{secrets.token_hex(8)}-",
        )

    async def post(self, request: Request) -> Response:
        batcher = self.batcher
        if batcher is None:
            raise RequestError(
                "telemetry ingestion is not configured on this server",
                status=503,
                code="telemetry_disabled",
            )
        media_type = request.headers.get("content-type")
        if media_type is not None:
            media_type = media_type.partition(";")[0].strip().lower()
            if media_type not in MEDIA_TYPES:
                raise RequestError(
                    f"Content-Type {media_type!r} is not NDJSON: send application/x-ndjson",
                    status=415,
                    code="unsupported_media_type",
                )
        body = await read_body(
            request, self.max_body_bytes, advice=": split it into several requests"
        )
        if len(body) > THREAD_PARSE_BYTES:
            parsed = await run_in_threadpool(self.parse, body)
        else:
            parsed = self.parse(body)
        rejections = parsed.rejections
        batcher.metrics.count_rejections(rejections, source=SOURCE)
        if parsed.objects == 0:
            reason = (
                f"not NDJSON: line {rejections[0].line}: {rejections[0].detail}"
                if rejections
                else "the body is empty: send one JSON event object per line"
            )
            return _json(
                {"error": "invalid_ndjson", "reason": reason, "errors": error_list(rejections)},
                400,
            )
        if len(parsed.batch) > batcher.queue_max:
            # Retrying could never help: the whole queue is smaller than this one body.
            raise RequestError(
                f"the body holds {len(parsed.batch)} events, more than the queue holds "
                f"({batcher.queue_max}): split it into several requests",
                status=413,
                code="body_too_large",
            )
        try:
            batcher.submit(parsed.batch, source=SOURCE)
        except TelemetryQueueFull as exc:
            return _json(
                {"error": "queue_full", "reason": str(exc)},
                503,
                {"Retry-After": retry_after_header(exc.retry_after_s)},
            )
        return _json(
            {
                "accepted": len(parsed.batch),
                "rejected": len(rejections),
                "errors": error_list(rejections),
            },
            202,
        )
