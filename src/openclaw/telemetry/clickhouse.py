"""The server telemetry store: ClickHouse over its native protocol (``clickhouse-driver``).

Written for ClickHouse 18.16 (Debian's package): no DateTime64, no TTL clause, no
LowCardinality. Times are ``Int64`` microseconds, as everywhere in OpenClaw.

Idempotence on ``event_id``: the table keeps itself duplicate-free, so feature SQL reads it
plainly (``FROM events``, no ``FINAL``). Before a batch is written, one query asks which of its
ids are already stored, and only the new rows are sent. The query is cheap because an event id
always comes with the same client and time: it reads only the day partitions the batch's time
range touches (their min/max index on ``ts_us``) and, within them, only the primary-key ranges
of the batch's clients. That check also gives ``insert()`` its exact count of new rows, which
``ReplacingMergeTree`` alone could not (it removes duplicates at some later merge, and until
then every plain query would count them; ``FINAL`` on every read would cost a single-threaded
merge per query). The engine is still ``ReplacingMergeTree``: two processes writing the same new
id at the same instant both pass the check, and the merge then removes the second copy.

Retention: 18.16 has no TTL clause, so ``apply_retention`` drops whole day partitions (UTC)
whose every event is older than the cut-off (``ALTER TABLE events DROP PARTITION``). Events of
the day the cut-off falls in stay until the next day's retention run: up to a day longer.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import numpy as np
import numpy.typing as npt

from openclaw.errors import ConfigError, TelemetryStoreError
from openclaw.settings import Settings
from openclaw.telemetry.base import (
    ClosedOnExit,
    Columns,
    Dialect,
    retention_cutoff_us,
    scanned_batch,
    time_bounds,
)
from openclaw.telemetry.events import UNKNOWN_BYTES, EventBatch

if TYPE_CHECKING:
    from clickhouse_driver import Client

DEFAULT_PORT: Final = 9000
_DAY_US: Final = 86_400_000_000
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: The partition key is the UTC day as a number (20240131): retention drops it by value.
PARTITION_KEY: Final = "toYYYYMMDD(toDateTime(intDiv(ts_us, 1000000), 'UTC'))"

SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS events (
    event_id String,
    client_id String,
    ts_us Int64,
    status_code Int16,
    response_time_ms Nullable(Float64),
    route Nullable(String),
    method Nullable(String),
    bytes Nullable(Int64)
) ENGINE = ReplacingMergeTree
PARTITION BY {PARTITION_KEY}
ORDER BY (client_id, ts_us, event_id)
"""

_COLUMNS: Final = (
    "event_id",
    "client_id",
    "ts_us",
    "status_code",
    "response_time_ms",
    "route",
    "method",
    "bytes",
)
_INSERT: Final = f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES"

# Which of a batch's ids are stored: the batch's (client_id, event_id) travel as an external
# table; the time bounds and the client set narrow the read to the primary-key ranges.
_EXISTING: Final = """
SELECT event_id FROM events
WHERE ts_us >= %(lo)s AND ts_us <= %(hi)s
  AND client_id IN (SELECT client_id FROM _openclaw_batch)
  AND event_id IN (SELECT event_id FROM _openclaw_batch)
"""

_SCAN_COLUMNS: Final = f"""
event_id, client_id, ts_us, status_code,
ifNull(response_time_ms, nan) AS response_time_ms,
route, method,
ifNull(bytes, {UNKNOWN_BYTES}) AS bytes
"""

_IN_RANGE: Final = "ts_us >= %(since)s AND ts_us < %(until)s"
_COUNT: Final = f"SELECT count() FROM events WHERE {_IN_RANGE}"  # noqa: S608 (constants)
_SCAN: Final = (
    f"SELECT {_SCAN_COLUMNS} FROM events WHERE {_IN_RANGE} "  # noqa: S608 (constants)
    "ORDER BY client_id, ts_us, event_id"
)
_OLD_DAYS: Final = (
    f"SELECT {PARTITION_KEY} AS day, count() FROM events "  # noqa: S608 (constants)
    "WHERE ts_us < %(first_kept)s GROUP BY day ORDER BY day"
)

_NUMPY_TYPES: Final[dict[str, type[np.generic]]] = {
    "Int8": np.int8,
    "Int16": np.int16,
    "Int32": np.int32,
    "Int64": np.int64,
    "UInt8": np.uint8,
    "UInt16": np.uint16,
    "UInt32": np.uint32,
    "UInt64": np.uint64,
    "Float32": np.float32,
    "Float64": np.float64,
}


@dataclass(frozen=True, slots=True)
class ClickHouseURL:
    host: str
    port: int
    database: str
    user: str = "default"
    password: str = ""

    def __str__(self) -> str:
        """The URL without its password, for messages."""
        return f"clickhouse://{self.user}@{self.host}:{self.port}/{self.database}"


def parse_clickhouse_url(url: str) -> ClickHouseURL:
    """``clickhouse://[user[:password]@]host[:port][/database]``; ConfigError naming the URL."""
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ConfigError(f"telemetry URL {url!r}: bad port: {exc}") from None
    if parts.scheme != "clickhouse" or not parts.hostname:
        raise ConfigError(
            f"telemetry URL {url!r}: expected clickhouse://host:port/database (no host given)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"telemetry URL {url!r}: query parameters are not supported")
    database = parts.path.strip("/") or "default"
    if not _NAME.match(database):
        raise ConfigError(
            f"telemetry URL {url!r}: database {database!r} must be letters, digits and _"
        )
    return ClickHouseURL(
        host=parts.hostname,
        port=port,
        database=database,
        user=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
    )


def _driver_errors() -> tuple[type[BaseException], ...]:
    from clickhouse_driver import errors

    # The driver lets socket errors and a half-read reply (EOFError) through unwrapped.
    return (errors.Error, OSError, EOFError)


def _describe(exc: BaseException) -> str:
    """The error without the server's stack trace (dozens of lines nobody here can act on)."""
    text = str(exc).split("Stack trace:", 1)[0].strip()
    return " ".join(text.split()) or type(exc).__name__


def _to_numpy(values: Sequence[Any], ch_type: str) -> npt.NDArray[Any]:
    """One result column to NumPy: NULL is NaN in numbers (a Nullable integer column with a
    NULL becomes float64), None in the rest; as the DuckDB store returns them."""
    nullable = ch_type.startswith("Nullable(")
    base = ch_type[len("Nullable(") : -1] if nullable else ch_type
    dtype = _NUMPY_TYPES.get(base)
    if dtype is not None:
        if nullable and any(v is None for v in values):
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        return np.array(values, dtype=dtype)
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _nullable(values: npt.NDArray[Any], unknown: npt.NDArray[np.bool_]) -> list[Any]:
    if not unknown.any():
        return values.tolist()  # type: ignore[no-any-return]
    out = values.astype(object)
    out[unknown] = None
    return out.tolist()  # type: ignore[no-any-return]


def _first_occurrences(ids: npt.NDArray[np.object_]) -> npt.NDArray[np.intp] | None:
    """Positions of each id's first occurrence, or None when the ids are already distinct."""
    values = ids.tolist()
    if len(set(values)) == len(values):
        return None
    seen: dict[object, int] = {}
    for i, event_id in enumerate(values):
        seen.setdefault(event_id, i)
    return np.fromiter(seen.values(), dtype=np.intp, count=len(seen))


class ClickHouseEventStore(ClosedOnExit):
    """Events in a ClickHouse table. See the module docstring on idempotence and retention."""

    dialect: Dialect = "clickhouse"

    def __init__(self, url: ClickHouseURL, *, settings: Settings) -> None:
        self.url = url
        self._settings = settings
        # Reentrant: insert() holds it across its check and its write, which must not
        # interleave with another thread's (both would see the same id as new).
        self._lock = threading.RLock()
        self._client: Client | None = self._new_client(url.database)

    def __repr__(self) -> str:
        return f"ClickHouseEventStore({str(self.url)!r})"

    def _new_client(self, database: str) -> Client:
        try:
            from clickhouse_driver import Client
        except ImportError as exc:
            raise ConfigError(
                f"telemetry URL {self.url}: install the clickhouse extra "
                "(pip install 'openclaw[clickhouse]')"
            ) from exc
        # Connecting is lazy (at the first query), so an unreachable server fails there.
        return Client(
            host=self.url.host,
            port=self.url.port,
            database=database,
            user=self.url.user,
            password=self.url.password,
            client_name="openclaw",
            connect_timeout=self._settings.telemetry_connect_timeout_s,
            send_receive_timeout=self._settings.telemetry_timeout_s,
            sync_request_timeout=self._settings.telemetry_connect_timeout_s,
        )

    def _execute(self, what: str, query: str, params: Any = None, **kwargs: Any) -> Any:
        with self._lock:
            if self._client is None:
                raise TelemetryStoreError(f"the ClickHouse telemetry store {self.url} is closed")
            try:
                return self._client.execute(query, params, **kwargs)
            except _driver_errors() as exc:
                raise TelemetryStoreError(
                    f"ClickHouse telemetry store {self.url}: {what} failed: {_describe(exc)}"
                ) from exc

    def create_schema(self) -> None:
        # The store's own client names the database at connect time, which fails while the
        # database does not exist: create it over a client of the always-present "default".
        if self.url.database != "default":
            bootstrap = self._new_client("default")
            try:
                bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {self.url.database}")
            except _driver_errors() as exc:
                raise TelemetryStoreError(
                    f"ClickHouse telemetry store {self.url}: creating the database failed: "
                    f"{_describe(exc)}"
                ) from exc
            finally:
                bootstrap.disconnect()
        self._execute("creating the schema", SCHEMA)

    def insert(self, batch: EventBatch) -> int:
        if len(batch) == 0:
            return 0
        with self._lock:
            return self._insert_new(batch)

    def _insert_new(self, batch: EventBatch) -> int:
        first = _first_occurrences(batch.event_id)
        if first is not None:
            batch = batch.take(first)
        external = {
            "name": "_openclaw_batch",
            "structure": [("client_id", "String"), ("event_id", "String")],
            "data": list(zip(batch.client_id.tolist(), batch.event_id.tolist(), strict=True)),
        }
        bounds = {"lo": int(batch.ts_us.min()), "hi": int(batch.ts_us.max())}
        rows = self._execute("checking stored ids", _EXISTING, bounds, external_tables=[external])
        if rows:
            stored = {row[0] for row in rows}
            new = np.fromiter(
                (event_id not in stored for event_id in batch.event_id.tolist()),
                dtype=np.bool_,
                count=len(batch),
            )
            batch = batch.take(new)
            if len(batch) == 0:
                return 0
        columns = [
            batch.event_id.tolist(),
            batch.client_id.tolist(),
            batch.ts_us.tolist(),
            batch.status_code.tolist(),
            _nullable(batch.response_time_ms, np.isnan(batch.response_time_ms)),
            batch.route.tolist(),
            batch.method.tolist(),
            _nullable(batch.bytes, batch.bytes == UNKNOWN_BYTES),
        ]
        self._execute(f"inserting {len(batch)} events", _INSERT, columns, columnar=True)
        return len(batch)

    def count(self, *, since_us: int | None = None, until_us: int | None = None) -> int:
        rows = self._execute("count", _COUNT, time_bounds(since_us, until_us))
        return int(rows[0][0])

    def time_range(self) -> tuple[int, int] | None:
        rows = self._execute("time_range", "SELECT count(), min(ts_us), max(ts_us) FROM events")
        n, lo, hi = rows[0]
        return None if n == 0 else (int(lo), int(hi))

    def scan(self, *, since_us: int | None = None, until_us: int | None = None) -> EventBatch:
        data = self._execute("scan", _SCAN, time_bounds(since_us, until_us), columnar=True)
        if not data:
            return EventBatch.empty()
        return scanned_batch(
            dict(zip(_COLUMNS, data, strict=True)), lambda values: _to_numpy(values, "String")
        )

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Columns:
        data, types = self._execute(
            "query", sql, dict(params) if params else None, columnar=True, with_column_types=True
        )
        if not types:
            return {}
        if not data:
            data = [() for _ in types]
        return {
            name: _to_numpy(col, ch_type) for (name, ch_type), col in zip(types, data, strict=True)
        }

    def apply_retention(self, *, now_us: int) -> int:
        cutoff = retention_cutoff_us(now_us, self._settings.telemetry_retention_days)
        # A day partition goes when the day after it starts no later than the cut-off.
        first_kept = (cutoff // _DAY_US) * _DAY_US
        old_days = self._execute(
            "listing partitions",
            _OLD_DAYS,
            {"first_kept": first_kept},
        )
        dropped = 0
        for day, rows in old_days:
            self._execute(
                f"dropping partition {day}", f"ALTER TABLE events DROP PARTITION {int(day)}"
            )
            dropped += int(rows)
        return dropped

    def ping(self) -> bool:
        try:
            self._execute("ping", "SELECT 1")
        except TelemetryStoreError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.disconnect()
                self._client = None
