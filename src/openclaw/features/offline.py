"""Features from a telemetry store (``openclaw features``): the heavy aggregation as SQL in the
store, the envelope arithmetic in NumPy (``core.py``).

Per slice of whole windows, three queries in the store's dialect:

1. per (client, window): counts, status mix, nearest-rank latency quantiles, the most requests
   in one aligned 1 s / 10 s / 60 s bucket, first and last arrival; ordered by (client, window);
2. per window: every client's total, 5xx count and p99 latency;
3. the arrival times, ordered by (client, time): the envelope and the sliding peak need them.

and once, each client's first event before the range's end (``seen_s``). The quantile is the
``ceil(q m)``-th smallest known value, written as the same integer expression in both dialects
(DuckDB's ``quantile_disc`` and ClickHouse's ``quantileExact`` pick differently at some ``m``);
every ratio is taken afterwards in NumPy from integer counts, so both stores give the same bits.

ClickHouse 18.16 has no window functions and one JOIN per SELECT: its bucket peaks come from
``arrayEnumerateUniq`` over the group's bucket numbers (the largest occurrence index of a value
is its multiplicity), which needs no join at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from openclaw.errors import TelemetryStoreError
from openclaw.features.core import (
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    P50,
    P99,
    US,
    FeatureFrame,
    WindowAggregates,
    aggregates_from_columns,
    assemble,
    duration_us,
)
from openclaw.settings import Settings
from openclaw.telemetry.base import Columns, EventStore

# -- DuckDB ----------------------------------------------------------------------------------

_DUCKDB_ROWS: Final = """
WITH ev AS (
    SELECT client_id, ts_us, status_code, response_time_ms AS rt, ts_us // %(w)s AS win
    FROM events
    WHERE ts_us >= %(since)s AND ts_us < %(until)s
),
b1 AS (
    SELECT client_id, win, (ts_us - win * %(w)s) // 1000000 AS b, count(*) AS n
    FROM ev GROUP BY client_id, win, b
),
b10 AS (
    SELECT client_id, win, b // 10 AS b, sum(n) AS n, max(n) AS m1
    FROM b1 GROUP BY client_id, win, b // 10
),
peaks AS (
    SELECT client_id, win, max(n) AS peak_60s, max(m10) AS peak_10s, max(m1) AS peak_1s
    FROM (
        SELECT client_id, win, sum(n) AS n, max(n) AS m10, max(m1) AS m1
        FROM b10 GROUP BY client_id, win, b // 6
    ) GROUP BY client_id, win
),
base AS (
    SELECT
        client_id, win,
        count(*) AS n,
        count(*) FILTER (WHERE status_code BETWEEN 200 AND 299) AS n_2xx,
        count(*) FILTER (WHERE status_code BETWEEN 400 AND 499 AND status_code <> 429) AS n_4xx,
        count(*) FILTER (WHERE status_code BETWEEN 500 AND 599) AS n_5xx,
        count(*) FILTER (WHERE status_code = 429) AS n_429,
        count(*) FILTER (WHERE isfinite(rt)) AS n_rt,
        list_sort(list(rt) FILTER (WHERE isfinite(rt))) AS rts,
        min(ts_us) AS min_us,
        max(ts_us) AS max_us
    FROM ev GROUP BY client_id, win
)
SELECT
    base.client_id AS client_id, base.win AS win, n, n_2xx, n_4xx, n_5xx, n_429, n_rt,
    CASE WHEN n_rt > 0 THEN rts[greatest((%(p50n)s * n_rt + %(p50d)s - 1) // %(p50d)s, 1)]
         ELSE 'NaN'::DOUBLE END AS rt_p50,
    CASE WHEN n_rt > 0 THEN rts[greatest((%(p99n)s * n_rt + %(p99d)s - 1) // %(p99d)s, 1)]
         ELSE 'NaN'::DOUBLE END AS rt_p99,
    peak_1s, peak_10s, peak_60s, min_us, max_us
FROM base JOIN peaks ON base.client_id = peaks.client_id AND base.win = peaks.win
ORDER BY base.client_id, base.win
"""

_DUCKDB_WINDOWS: Final = """
SELECT win, win_n, win_5xx,
    CASE WHEN n_rt > 0 THEN rts[greatest((%(p99n)s * n_rt + %(p99d)s - 1) // %(p99d)s, 1)]
         ELSE 'NaN'::DOUBLE END AS win_p99
FROM (
    SELECT ts_us // %(w)s AS win,
        count(*) AS win_n,
        count(*) FILTER (WHERE status_code BETWEEN 500 AND 599) AS win_5xx,
        count(*) FILTER (WHERE isfinite(response_time_ms)) AS n_rt,
        list_sort(list(response_time_ms) FILTER (WHERE isfinite(response_time_ms))) AS rts
    FROM events
    WHERE ts_us >= %(since)s AND ts_us < %(until)s
    GROUP BY win
)
ORDER BY win
"""

_DUCKDB_TIMES: Final = """
SELECT ts_us FROM events
WHERE ts_us >= %(since)s AND ts_us < %(until)s
ORDER BY client_id, ts_us
"""

_DUCKDB_FIRST: Final = """
SELECT client_id, min(ts_us) AS first_us FROM events WHERE ts_us < %(until)s GROUP BY client_id
"""

_DUCKDB_RANGE: Final = "SELECT min(ts_us) AS lo, max(ts_us) AS hi, count(*) AS n FROM events"

# -- ClickHouse 18.16 ------------------------------------------------------------------------

#: A known response time: not NULL (a Nullable column) and not NaN (a plain Float64 one).
_CH_KNOWN: Final = "(isNotNull(response_time_ms) AND isFinite(assumeNotNull(response_time_ms)))"


def _ch_peak(bucket_us: int) -> str:
    return (
        "arrayReduce('max', arrayEnumerateUniq("
        f"arrayMap(t -> intDiv(t - win * %(w)s, {bucket_us}), ts)))"
    )


_CH_ROWS: Final = f"""
SELECT client_id, win, n, n_2xx, n_4xx, n_5xx, n_429, n_rt,
    if(n_rt > 0, rts[greatest(intDiv(%(p50n)s * n_rt + %(p50d)s - 1, %(p50d)s), 1)], nan)
        AS rt_p50,
    if(n_rt > 0, rts[greatest(intDiv(%(p99n)s * n_rt + %(p99d)s - 1, %(p99d)s), 1)], nan)
        AS rt_p99,
    peak_1s, peak_10s, peak_60s, min_us, max_us
FROM (
    SELECT
        client_id,
        intDiv(ts_us, %(w)s) AS win,
        count() AS n,
        countIf(status_code >= 200 AND status_code <= 299) AS n_2xx,
        countIf(status_code >= 400 AND status_code <= 499 AND status_code != 429) AS n_4xx,
        countIf(status_code >= 500 AND status_code <= 599) AS n_5xx,
        countIf(status_code = 429) AS n_429,
        arraySort(groupArrayIf(toFloat64(assumeNotNull(response_time_ms)), {_CH_KNOWN})) AS rts,
        length(rts) AS n_rt,
        groupArray(ts_us) AS ts,
        {_ch_peak(1 * US)} AS peak_1s,
        {_ch_peak(10 * US)} AS peak_10s,
        {_ch_peak(60 * US)} AS peak_60s,
        min(ts_us) AS min_us,
        max(ts_us) AS max_us
    FROM {{source}}
    WHERE ts_us >= %(since)s AND ts_us < %(until)s
    GROUP BY client_id, win
)
ORDER BY client_id, win
"""  # noqa: S608 (built from constants; values are driver parameters)

_CH_WINDOWS: Final = f"""
SELECT win, win_n, win_5xx,
    if(n_rt > 0, rts[greatest(intDiv(%(p99n)s * n_rt + %(p99d)s - 1, %(p99d)s), 1)], nan)
        AS win_p99
FROM (
    SELECT intDiv(ts_us, %(w)s) AS win,
        count() AS win_n,
        countIf(status_code >= 500 AND status_code <= 599) AS win_5xx,
        arraySort(groupArrayIf(toFloat64(assumeNotNull(response_time_ms)), {_CH_KNOWN})) AS rts,
        length(rts) AS n_rt
    FROM {{source}}
    WHERE ts_us >= %(since)s AND ts_us < %(until)s
    GROUP BY win
)
ORDER BY win
"""  # noqa: S608 (built from constants)

_CH_TIMES: Final = """
SELECT ts_us FROM {source}
WHERE ts_us >= %(since)s AND ts_us < %(until)s
ORDER BY client_id, ts_us
"""

_CH_FIRST: Final = """
SELECT client_id, min(ts_us) AS first_us FROM {source} WHERE ts_us < %(until)s GROUP BY client_id
"""

_CH_RANGE: Final = "SELECT min(ts_us) AS lo, max(ts_us) AS hi, count() AS n FROM {source}"


@dataclass(frozen=True, slots=True)
class Dialect:
    rows: str
    windows: str
    times: str
    first: str
    range: str


def _dialect(store: EventStore) -> Dialect:
    if store.dialect == "duckdb":
        return Dialect(_DUCKDB_ROWS, _DUCKDB_WINDOWS, _DUCKDB_TIMES, _DUCKDB_FIRST, _DUCKDB_RANGE)
    if store.dialect == "clickhouse":
        # The store may keep an event twice until a merge: it names the deduplicated source.
        source = getattr(store, "dedup_source", "events")
        return Dialect(
            *(
                sql.replace("{source}", source)
                for sql in (_CH_ROWS, _CH_WINDOWS, _CH_TIMES, _CH_FIRST, _CH_RANGE)
            )
        )
    raise TelemetryStoreError(f"no feature SQL for the {store.dialect!r} dialect")


# -- extraction ------------------------------------------------------------------------------

#: ``progress(done_us, total_us)`` after each slice.
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Extent:
    """The whole windows a run covers: ``[first_window, end_window)``, window indices."""

    first_window: int
    end_window: int
    window_us: int

    @property
    def since_us(self) -> int:
        return self.first_window * self.window_us

    @property
    def until_us(self) -> int:
        return self.end_window * self.window_us


def plan_extent(
    store: EventStore,
    *,
    window_us: int,
    since_us: int | None = None,
    until_us: int | None = None,
) -> Extent | None:
    """The whole windows inside ``[since, until)``; by default from the window of the first
    stored event to the end of the window of the last (the last may still be filling).
    None when there is nothing to do. A bound inside a window moves inwards, to whole windows:
    a cut window would give a wrong label."""
    if since_us is None or until_us is None:
        cols = store.query(_dialect(store).range)
        n = int(np.asarray(cols["n"])[0])
        if n == 0:
            return None
        lo = int(np.asarray(cols["lo"])[0])
        hi = int(np.asarray(cols["hi"])[0])
        if since_us is None:
            since_us = lo // window_us * window_us
        if until_us is None:
            until_us = (hi // window_us + 1) * window_us
    first = -(-since_us // window_us)
    end = until_us // window_us
    if end <= first:
        return None
    return Extent(first, end, window_us)


def _fetch(store: EventStore, sql: str, params: dict[str, int], what: str) -> Columns:
    # DuckDB refuses parameters a statement does not use.
    used = {name: value for name, value in params.items() if f"%({name})s" in sql}
    try:
        return store.query(sql, used)
    except TelemetryStoreError:
        raise
    except Exception as exc:
        raise TelemetryStoreError(f"feature query ({what}) failed on {store!r}: {exc}") from exc


def store_aggregates(
    store: EventStore,
    *,
    window_us: int,
    since_us: int,
    until_us: int,
    first_seen: dict[str, int],
    timings: dict[str, float] | None = None,
) -> tuple[WindowAggregates, npt.NDArray[np.int64]]:
    """The aggregates of the whole windows in ``[since_us, until_us)``, and their arrival times.

    ``timings``: seconds spent per query are added to it (for ``openclaw bench features``).
    """
    clock = _Stopwatch(timings)
    sql = _dialect(store)
    params = {
        "w": window_us,
        "since": since_us,
        "until": until_us,
        "p50n": P50[0],
        "p50d": P50[1],
        "p99n": P99[0],
        "p99d": P99[1],
    }
    rows = _fetch(store, sql.rows, params, "per client and window")
    clock.lap("sql_rows")
    windows = _fetch(store, sql.windows, params, "per window")
    clock.lap("sql_windows")
    times = _fetch(store, sql.times, params, "arrival times")
    ts = np.asarray(times["ts_us"]).astype(np.int64)
    clock.lap("sql_times")

    columns: dict[str, Any] = dict(rows)
    win = np.asarray(rows["win"]).astype(np.int64)
    w_index = np.asarray(windows["win"]).astype(np.int64)
    at = np.searchsorted(w_index, win)
    if win.size and (at.max() >= w_index.size or not np.array_equal(w_index[at], win)):
        raise TelemetryStoreError("per-window totals miss a window of the per-client rows")
    for name in ("win_n", "win_5xx", "win_p99"):
        columns[name] = np.asarray(windows[name])[at] if win.size else np.empty(0)
    clients = np.asarray(rows["client_id"])
    try:
        columns["first_us"] = np.fromiter(
            (first_seen[c] for c in clients.tolist()), dtype=np.int64, count=clients.size
        )
    except KeyError as exc:
        raise TelemetryStoreError(f"client {exc} has no first-seen time") from None
    agg = aggregates_from_columns(columns)
    clock.lap("join")
    return agg, ts


class _Stopwatch:
    """Adds the seconds since the previous lap to ``timings[name]`` (when timings are asked for)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self._timings = timings
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self._timings is None:
            return
        now = time.perf_counter()
        self._timings[name] = self._timings.get(name, 0.0) + now - self._last
        self._last = now


def extract_features(
    store: EventStore,
    *,
    settings: Settings,
    since_us: int | None = None,
    until_us: int | None = None,
    window_s: float | None = None,
    slice_s: float = 86_400.0,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
) -> FeatureFrame:
    """Feature rows of every (client, window) with events, over the whole windows of the
    range (see :func:`plan_extent`), ordered by window slice, then client, then window.

    The range is worked through in slices of about ``slice_s`` (whole windows), so memory
    follows a slice's events, not the store's. ``timings`` collects seconds per phase.
    """
    clock = _Stopwatch(timings)
    window_us = duration_us(settings.window_s if window_s is None else window_s)
    horizon_us = duration_us(settings.label_horizon_s)
    empty = FeatureFrame.empty(window_s=window_us / US, label_horizon_s=horizon_us / US)
    extent = plan_extent(store, window_us=window_us, since_us=since_us, until_us=until_us)
    if extent is None:
        return empty
    first_cols = _fetch(store, _dialect(store).first, {"until": extent.until_us}, "first seen")
    first_seen = dict(
        zip(
            np.asarray(first_cols["client_id"]).tolist(),
            np.asarray(first_cols["first_us"]).astype(np.int64).tolist(),
            strict=True,
        )
    )
    clock.lap("sql_extent")
    per_slice = max(1, math.floor(slice_s * US / window_us))
    frames: list[FeatureFrame] = []
    total = extent.until_us - extent.since_us
    for lo in range(extent.first_window, extent.end_window, per_slice):
        hi = min(lo + per_slice, extent.end_window)
        agg, ts = store_aggregates(
            store,
            window_us=window_us,
            since_us=lo * window_us,
            until_us=hi * window_us,
            first_seen=first_seen,
            timings=timings,
        )
        clock = _Stopwatch(timings)
        if agg.n.size:
            try:
                frames.append(assemble(agg, ts, window_us=window_us, horizon_us=horizon_us))
            except ValueError as exc:
                raise TelemetryStoreError(f"{store!r}: {exc}") from exc
        clock.lap("numpy")
        if progress is not None:
            progress(hi * window_us - extent.since_us, total)
    return FeatureFrame.concat(frames) if frames else empty


# -- Parquet ---------------------------------------------------------------------------------

_PARQUET_VIEW: Final = "_openclaw_features"


def write_parquet(frame: FeatureFrame, path: str | Path) -> None:
    """One row per (client, window): ``client_id``, ``window_start_us`` and the features in
    schema order; the schema version, window and horizon as Parquet key-value metadata."""
    import duckdb

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    columns = frame.as_columns()
    meta = {
        "openclaw_schema": frame.schema_version,
        "openclaw_window_s": repr(frame.window_s),
        "openclaw_label_horizon_s": repr(frame.label_horizon_s),
        "openclaw_features": ",".join(frame.feature_names),
    }
    kv = ", ".join(f"{k}: '{v}'" for k, v in meta.items())
    con = duckdb.connect()
    try:
        con.register(_PARQUET_VIEW, columns)
        quoted = str(target).replace("'", "''")
        # COPY takes no parameter for its target: the path is quoted, the rest is ours.
        con.execute(
            f"COPY (SELECT * FROM {_PARQUET_VIEW}) TO '{quoted}' "  # noqa: S608
            f"(FORMAT parquet, KV_METADATA {{{kv}}})"
        )
    except duckdb.Error as exc:
        raise OSError(f"cannot write features to {target}: {exc}") from exc
    finally:
        con.close()


def read_parquet(path: str | Path) -> FeatureFrame:
    """A frame written by :func:`write_parquet` (its schema checked against this code's)."""
    import duckdb

    source = Path(path)
    con = duckdb.connect()
    try:
        meta_rows = con.execute(
            "SELECT decode(key), decode(value) FROM parquet_kv_metadata($path)",
            {"path": str(source)},
        ).fetchall()
        cols = con.execute("SELECT * FROM read_parquet($path)", {"path": str(source)}).fetchnumpy()
    except duckdb.Error as exc:
        raise OSError(f"cannot read features from {source}: {exc}") from exc
    finally:
        con.close()
    meta = {str(k): str(v) for k, v in meta_rows}
    names = tuple(meta.get("openclaw_features", "").split(","))
    if meta.get("openclaw_schema") != FEATURE_SCHEMA_VERSION or names != FEATURE_NAMES:
        raise ValueError(
            f"{source}: feature schema {meta.get('openclaw_schema')!r} is not "
            f"{FEATURE_SCHEMA_VERSION!r} (written by another version of openclaw)"
        )
    matrix = np.column_stack([np.asarray(cols[name], dtype=np.float64) for name in FEATURE_NAMES])
    client = np.asarray(cols["client_id"]).astype(object)
    return FeatureFrame(
        client_id=client,
        window_start_us=np.asarray(cols["window_start_us"]).astype(np.int64),
        X=matrix.reshape(-1, len(FEATURE_NAMES)),
        r_star=np.ascontiguousarray(matrix[:, FEATURE_NAMES.index("r_star")]),
        b_star=np.ascontiguousarray(matrix[:, FEATURE_NAMES.index("b_star")]),
        window_s=float(meta["openclaw_window_s"]),
        label_horizon_s=float(meta["openclaw_label_horizon_s"]),
    )


# -- the command (``openclaw features``) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    rows: int
    clients: int
    windows: int
    first_window_start_us: int | None
    last_window_start_us: int | None
    seconds: float


def summarize(frame: FeatureFrame, *, seconds: float) -> Summary:
    starts = frame.window_start_us
    return Summary(
        rows=len(frame),
        clients=int(np.unique(frame.client_id).size) if len(frame) else 0,
        windows=int(np.unique(starts).size),
        first_window_start_us=int(starts.min()) if starts.size else None,
        last_window_start_us=int(starts.max()) if starts.size else None,
        seconds=seconds,
    )


def export_features(
    store_url: str,
    out: str | Path,
    *,
    settings: Settings,
    since_us: int | None = None,
    until_us: int | None = None,
    window_s: float | None = None,
    progress: Progress | None = None,
) -> Summary:
    """``openclaw features``: the store's feature rows to a Parquet file; a short summary."""
    from openclaw.telemetry.stores import open_event_store

    started = time.perf_counter()
    store = open_event_store(store_url, settings=settings)
    try:
        frame = extract_features(
            store,
            settings=settings,
            since_us=since_us,
            until_us=until_us,
            window_s=window_s,
            progress=progress,
        )
    finally:
        store.close()
    write_parquet(frame, out)
    return summarize(frame, seconds=time.perf_counter() - started)
