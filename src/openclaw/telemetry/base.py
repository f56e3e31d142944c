"""The protocol every telemetry store implements. Implementations: ``duckdb``, ``clickhouse``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from openclaw.telemetry.events import EventBatch

Dialect = Literal["duckdb", "clickhouse"]
Columns = dict[str, npt.NDArray[Any]]

_MIN_INT64: Final = -(2**63)
_MAX_INT64: Final = 2**63 - 1


@runtime_checkable
class EventStore(Protocol):
    """Where raw telemetry events live, and where the heavy feature aggregation runs (as SQL).

    Every method is blocking and safe to call from one thread at a time; async callers use a
    worker thread. Times are epoch microseconds (UTC), intervals half-open ``[since, until)``.
    """

    #: Which SQL the feature code must speak to this store.
    dialect: Dialect

    def create_schema(self) -> None:
        """Create the tables if missing. Idempotent; ``open_event_store`` calls it."""

    def insert(self, batch: EventBatch) -> int:
        """Store a batch, idempotent on ``event_id``; returns how many rows were new.

        When it returns, the rows are committed: a crash afterwards loses none of them.
        """

    def count(self, *, since_us: int | None = None, until_us: int | None = None) -> int:
        """Distinct events stored (each event id once), optionally within a time range."""

    def time_range(self) -> tuple[int, int] | None:
        """The first and last event's ``ts_us``; None when empty."""

    def scan(self, *, since_us: int | None = None, until_us: int | None = None) -> EventBatch:
        """Every stored event in the range, each id once.

        Ordered by (client_id, ts_us, event_id).
        """

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Columns:
        """Run a query in this store's dialect; the result as named NumPy columns.

        Parameters are named ``%(name)s`` placeholders in both dialects (the DuckDB store
        translates), so the feature code writes its SQL once per dialect, not per driver.
        With parameters, a literal ``%`` is written ``%%`` (pyformat) in both.

        The table is ``events(event_id, client_id, ts_us, status_code, response_time_ms,
        route, method, bytes)``; unknowns are SQL NULL. Both stores keep it duplicate-free
        (they check a batch's ids before writing it), so SQL reads it plainly: ``FROM events``,
        no ``FINAL`` in ClickHouse. In results, NULL is NaN in a numeric column (an integer
        column with a NULL comes back as float64) and None in the others. DuckDB's ``sum`` of
        integers is HUGEINT, which comes back as float64: cast it (``::BIGINT``) where exact
        integers matter.
        """

    def apply_retention(self, *, now_us: int) -> int:
        """Drop events older than the retention window before ``now_us``; returns rows dropped
        where the backend can tell (ClickHouse drops whole days and may return -1)."""

    def ping(self) -> bool:
        """True when the store answers (for ``/readyz``)."""

    def close(self) -> None: ...


class ClosedOnExit:
    """``with store:`` closes the store at the end of the block."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def time_bounds(since_us: int | None, until_us: int | None) -> dict[str, int]:
    """Both ends of a half-open time range as the ``since`` and ``until`` query parameters,
    open ends as the widest Int64 bounds."""
    return {
        "since": _MIN_INT64 if since_us is None else int(since_us),
        "until": _MAX_INT64 if until_us is None else int(until_us),
    }


def retention_cutoff_us(now_us: int, retention_days: float) -> int:
    """Events before this time (epoch microseconds) are past retention."""
    return int(now_us) - round(retention_days * 86_400 * 1e6)


def scanned_batch(
    columns: Mapping[str, Any], objects: Callable[[Any], npt.NDArray[np.object_]]
) -> EventBatch:
    """A scan's columns, unknowns already NaN and ``UNKNOWN_BYTES``, as an EventBatch;
    ``objects`` turns a driver's string column into an object array."""
    return EventBatch(
        event_id=objects(columns["event_id"]),
        client_id=objects(columns["client_id"]),
        ts_us=np.asarray(columns["ts_us"], dtype=np.int64),
        status_code=np.asarray(columns["status_code"], dtype=np.int16),
        response_time_ms=np.asarray(columns["response_time_ms"], dtype=np.float64),
        route=objects(columns["route"]),
        method=objects(columns["method"]),
        bytes=np.asarray(columns["bytes"], dtype=np.int64),
    )


def column(columns: Columns, name: str) -> npt.NDArray[Any]:
    """One named result column, with an error that names what is there when it is missing."""
    try:
        return columns[name]
    except KeyError:
        raise KeyError(f"no column {name!r} in {sorted(columns)}") from None


def as_columns(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> Columns:
    """Rows (as drivers return them) to named NumPy columns."""
    out: Columns = {}
    for i, name in enumerate(names):
        values = [row[i] for row in rows]
        out[name] = np.asarray(values) if values else np.empty(0)
    return out
