"""Features and labels per (client, window): the arithmetic, shared by the offline and online paths.

Definitions (DESIGN.md, "The learning problem"):

Times
    Every time is an integer number of microseconds since the epoch (UTC), as events store them.
    Functions that take float seconds round them to microseconds first, so the float and the
    integer entry points agree exactly.

Windows
    Aligned to the epoch: window ``k`` is ``[k*W, (k+1)*W)`` with ``W = settings.window_s``
    (in whole microseconds). A row exists for every (client, window) with at least one event;
    a client silent in a window has no row there, and its label for that window is (0, 0).

Label (r*, b*)
    Cost 1 per request. ``r* = P_H / H`` with ``P_H`` the most arrivals in any half-open
    interval ``[a, a + H)`` inside the window (sliding, exact, on integer microseconds) and
    ``H = settings.label_horizon_s``. ``b* = b*(r*)``, the envelope below. The bucket
    ``(capacity=b*, refill_rate=r*)``, starting full at the window's start, admits every request
    of the window, and any smaller capacity denies one (tests/test_features_core.py replays the
    window through the real engine, ``openclaw.limiter.core.refill_and_take``).

    One change to the letter of DESIGN.md, and why: the label's ``b*`` is the envelope times
    ``1 + LABEL_GUARD`` (1e-9). The engine refills in floating point, one rounding per request,
    and at the exact envelope the decisive request then finds ``cost - 1 ulp`` tokens about one
    time in three (measured on random windows): the "zero drops" promise would break on
    rounding. A billionth of a bucket buys it back; any capacity below ``b*(r*) (1 - 1e-8)``
    still denies. The ``bstar_r*`` features are the envelope itself.

Envelope b*(r)
    For arrivals ``t_1 <= ... <= t_n`` with costs ``c_j``:
    ``d_j = max(d_{j-1} - r (t_j - t_{j-1}), 0) + c_j``, ``b*(r) = max_j d_j`` (0 with no
    arrival). Unrolled, ``d_j = max_{i<=j} (S_j - S_{i-1}) - r (t_j - t_i)`` with ``S`` the
    cumulative cost, so ``b*(r) = max_j [A_j - min_{i<=j} B_i]`` with ``A_j = S_j - r t_j`` and
    ``B_i = A_i - c_i``: a running minimum and a maximum, which NumPy does for millions of
    (client, window) segments at once (segments grouped by length into padded matrices, so the
    running minimum never crosses a segment and no offset costs precision). Times are relative
    to the window start (at most W seconds), so ``r t`` keeps its digits.

Features (``FEATURE_NAMES``, in this order, schema ``FEATURE_SCHEMA_VERSION``); each from the
events of the window only, except ``seen_s`` (the client's history before the window's end):

    n_requests            arrivals in the window
    rate_mean             n_requests / W
    peak_rate_1s          most arrivals in one aligned 1 s bucket of the window, / 1
    peak_rate_10s         the same with 10 s buckets, / 10
    peak_rate_60s         the same with 60 s buckets, / 60
                          (buckets aligned to the window start, cut at its end: SQL-friendly)
    bstar_r0_1            b*(0.1 req/s)
    bstar_r1              b*(1 req/s)
    bstar_r10             b*(10 req/s)
    burstiness_cv         std / mean of the inter-arrival times (population std); 0 below 3
                          arrivals or when the mean gap is 0
    frac_2xx              share of the window's requests with status 200..299
    frac_4xx              400..499 except 429
    frac_5xx              500..599
    frac_429              429 (so the four are disjoint; 1xx and 3xx are in none)
    latency_p50_ms        nearest-rank quantiles of the known response times: the k-th
    latency_p99_ms        smallest with k = ceil(q m) (m known values; integer arithmetic, so
                          NumPy, DuckDB and ClickHouse pick the same element); 0 when none known
    frac_latency_unknown  share of requests without a response time (access logs have none)
    traffic_share         n_requests / all arrivals of the window (every client)
    global_p99_ms         nearest-rank p99 of every known response time in the window; 0 if none
    global_5xx_frac       share of all the window's requests with a 5xx status
    hour_sin, hour_cos    sin and cos of 2 pi h / 24, h the window start's hour of day (UTC,
                          fractional)
    seen_s                seconds from the client's first event ever to the window's end
    r_star, b_star        the window's own label (training pairs window k's features with
                          window k+1's label; persistence is the baseline to beat)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from openclaw.telemetry.events import EventBatch

US: Final = 1_000_000
FEATURE_SCHEMA_VERSION: Final = "openclaw-features-1"
#: Aligned bucket sizes of the peak-rate features, seconds.
PEAK_BUCKETS_S: Final = (1, 10, 60)
#: Reference rates of the envelope features, requests per second.
REFERENCE_RATES: Final = (0.1, 1.0, 10.0)
#: Relative headroom of the label's capacity over the exact envelope (see the module docstring).
LABEL_GUARD: Final = 1e-9
#: Nearest-rank quantiles as exact fractions (numerator, denominator).
P50: Final = (50, 100)
P99: Final = (99, 100)

FEATURE_NAMES: Final[tuple[str, ...]] = (
    "n_requests",
    "rate_mean",
    "peak_rate_1s",
    "peak_rate_10s",
    "peak_rate_60s",
    "bstar_r0_1",
    "bstar_r1",
    "bstar_r10",
    "burstiness_cv",
    "frac_2xx",
    "frac_4xx",
    "frac_5xx",
    "frac_429",
    "latency_p50_ms",
    "latency_p99_ms",
    "frac_latency_unknown",
    "traffic_share",
    "global_p99_ms",
    "global_5xx_frac",
    "hour_sin",
    "hour_cos",
    "seen_s",
    "r_star",
    "b_star",
)
FEATURE_INDEX: Final = {name: i for i, name in enumerate(FEATURE_NAMES)}

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
ObjArray = npt.NDArray[np.object_]


def seconds_to_us(ts_s: npt.ArrayLike) -> I64:
    """Float seconds to whole microseconds (rounded), the unit every feature is computed in."""
    return np.rint(np.asarray(ts_s, dtype=np.float64) * US).astype(np.int64)


def duration_us(seconds: float) -> int:
    """A positive duration in whole microseconds."""
    us = round(seconds * US)
    if us <= 0:
        raise ValueError(f"duration must be at least 1 microsecond, got {seconds!r} s")
    return us


# -- one segment: the reference definitions -------------------------------------------------


def sliding_peak_count(ts_s: npt.ArrayLike, horizon_s: float) -> int:
    """Most arrivals in any half-open interval of ``horizon_s`` seconds (``ts_s`` sorted)."""
    ts_us = seconds_to_us(ts_s)
    return int(segmented_sliding_peak(ts_us, np.array([0, len(ts_us)]), duration_us(horizon_s))[0])


def envelope(ts_s: npt.ArrayLike, rate: float, cost: npt.ArrayLike | None = None) -> float:
    """``b*(rate)``: the smallest bucket refilled at ``rate``/s that admits every arrival.

    ``ts_s`` sorted (ties allowed), seconds; ``cost`` one per arrival (default 1 each).
    """
    t = np.asarray(ts_s, dtype=np.float64)
    if t.size == 0:
        return 0.0
    rel = t - t[0]  # relative times keep the digits r * t needs
    out = segmented_envelope(rel, np.array([0, t.size]), np.array([float(rate)]), cost=cost)
    return float(out[0, 0])


def envelope_naive(
    ts_s: Sequence[float], rate: float, cost: Sequence[float] | None = None
) -> float:
    """The recursion itself, one arrival at a time (the reference the vectorised code is
    tested against)."""
    best = 0.0
    backlog = 0.0
    previous: float | None = None
    for j, t in enumerate(ts_s):
        c = 1.0 if cost is None else float(cost[j])
        drained = 0.0 if previous is None else rate * (t - previous)
        backlog = max(backlog - drained, 0.0) + c
        best = max(best, backlog)
        previous = t
    return best


def label_capacity(envelope_value: npt.ArrayLike) -> F64:
    """The label's bucket size for an exact envelope: :data:`LABEL_GUARD` of headroom so the
    floating-point engine admits every request of the window."""
    return np.asarray(envelope_value, dtype=np.float64) * (1.0 + LABEL_GUARD)


def window_label(ts_s: npt.ArrayLike, *, horizon_s: float) -> tuple[float, float]:
    """``(r*, b*)`` of one window's arrivals (seconds, sorted): the bucket that admits them all."""
    r_star = sliding_peak_count(ts_s, horizon_s) / (duration_us(horizon_s) / US)
    return r_star, float(label_capacity(envelope(ts_s, r_star)))


# -- many segments at once ----------------------------------------------------------------------


def offsets_from_lengths(lengths: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Segment boundaries ``[0, l0, l0+l1, ...]`` from segment lengths."""
    lens = np.asarray(lengths, dtype=np.intp)
    out = np.zeros(lens.size + 1, dtype=np.intp)
    np.cumsum(lens, out=out[1:])
    return out


def _segment_ids(offsets: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    lengths = np.diff(offsets)
    return np.repeat(np.arange(lengths.size, dtype=np.intp), lengths)


def segmented_sliding_peak(ts_us: I64, offsets: npt.NDArray[np.intp], horizon_us: int) -> I64:
    """Per segment, most arrivals in any half-open interval of ``horizon_us`` (0 if empty).

    Each segment's integer times are shifted into a disjoint range of one sorted key, so one
    ``searchsorted`` answers every segment exactly.
    """
    n_seg = offsets.size - 1
    out = np.zeros(n_seg, dtype=np.int64)
    if ts_us.size == 0:
        return out
    seg = _segment_ids(offsets)
    starts = offsets[:-1]
    nonempty = np.diff(offsets) > 0
    first = np.zeros(n_seg, dtype=np.int64)
    first[nonempty] = ts_us[starts[nonempty]]
    rel = ts_us - first[seg]
    stride = int(rel.max()) + horizon_us + 1
    if n_seg * stride >= 2**62:
        raise ValueError("segments span too long a time for one integer key")
    key = seg.astype(np.int64) * stride + rel
    inside = np.searchsorted(key, key + horizon_us, side="left") - np.arange(key.size)
    out[nonempty] = np.maximum.reduceat(inside, starts[nonempty])
    return out


def _length_classes(
    lengths: npt.NDArray[np.intp],
) -> list[tuple[npt.NDArray[np.intp], int]]:
    """Segments grouped by ``ceil(log2(length))``: (segment indices, padded width) per group.

    Padding each group to its width wastes at most half of it, and lets a running minimum run
    along a matrix row, never across two segments.
    """
    nonempty = np.flatnonzero(lengths > 0)
    if nonempty.size == 0:
        return []
    lens = lengths[nonempty]
    cls = np.ceil(np.log2(lens)).astype(np.intp)
    # log2 of an exact power of two is exact; guard the rest against an off-by-one anyway.
    cls = np.where((1 << cls) < lens, cls + 1, cls)
    order = np.argsort(cls, kind="stable")
    sorted_cls = cls[order]
    bounds = np.flatnonzero(np.diff(sorted_cls)) + 1
    groups = []
    for part in np.split(order, bounds):
        groups.append((nonempty[part], 1 << int(cls[part[0]])))
    return groups


def segmented_envelope(
    t_s: F64,
    offsets: npt.NDArray[np.intp],
    rates: npt.ArrayLike,
    *,
    cost: npt.ArrayLike | None = None,
) -> F64:
    """``b*(r)`` per segment, for one rate or several.

    ``t_s``: seconds, sorted within each segment, best relative to the segment's window start.
    ``rates``: shape ``(m,)`` (the same rates for every segment) or ``(n_seg, m)`` (rates of
    each segment; ``r[:, None]`` for one per segment). The result has shape ``(n_seg, m)``.
    """
    t_all = np.asarray(t_s, dtype=np.float64)
    c_all = (
        np.ones(t_all.size, dtype=np.float64)
        if cost is None
        else np.asarray(cost, dtype=np.float64)
    )
    if c_all.shape != t_all.shape:
        raise ValueError("cost must have one value per arrival")
    n_seg = offsets.size - 1
    r = np.asarray(rates, dtype=np.float64)
    per_segment = r.ndim == 2
    if r.ndim == 1:
        r = r[None, :]
    if r.ndim != 2 or (per_segment and r.shape[0] != n_seg):
        raise ValueError("rates must have shape (m,) or (n_segments, m)")
    m = r.shape[1]
    out = np.zeros((n_seg, m), dtype=np.float64)
    lengths = np.diff(offsets)
    for members, width in _length_classes(lengths):
        starts = offsets[members]
        lens = lengths[members]
        col = np.arange(width, dtype=np.intp)
        valid = col[None, :] < lens[:, None]
        index = np.minimum(starts[:, None] + col[None, :], (starts + lens - 1)[:, None])
        t = t_all[index]
        c = np.where(valid, c_all[index], 0.0)
        s = np.cumsum(c, axis=1)
        for k in range(m):
            rk = r[members, k][:, None] if per_segment else r[0, k]
            a = s - rk * t
            b = np.where(valid, a - c, np.inf)
            np.minimum.accumulate(b, axis=1, out=b)
            gap = np.where(valid, a - b, -np.inf)
            out[members, k] = gap.max(axis=1)
    return out


def segmented_bucket_peak(rel_us: I64, offsets: npt.NDArray[np.intp], bucket_us: int) -> I64:
    """Per segment, most arrivals in one aligned bucket ``[j*bucket, (j+1)*bucket)`` of the
    time relative to the window start (``rel_us`` sorted within segments, non-negative)."""
    n_seg = offsets.size - 1
    out = np.zeros(n_seg, dtype=np.int64)
    if rel_us.size == 0:
        return out
    seg = _segment_ids(offsets).astype(np.int64)
    bucket = rel_us // bucket_us
    key = seg * (int(bucket.max()) + 1) + bucket
    change = np.flatnonzero(np.diff(key)) + 1
    run_start = np.concatenate(([0], change))
    run_len = np.diff(np.concatenate((run_start, [key.size])))
    run_seg = seg[run_start]
    np.maximum.at(out, run_seg, run_len)
    return out


def segmented_cv(t_s: F64, offsets: npt.NDArray[np.intp]) -> F64:
    """Coefficient of variation of the inter-arrival times per segment (population std / mean);
    0 for fewer than 3 arrivals or a zero mean gap."""
    n_seg = offsets.size - 1
    out = np.zeros(n_seg, dtype=np.float64)
    if t_s.size < 3:
        return out
    seg = _segment_ids(offsets)
    gaps = np.diff(t_s)
    same = seg[1:] == seg[:-1]
    gap_seg = seg[1:][same]
    gaps = gaps[same]
    n_gaps = np.diff(offsets) - 1
    total = np.bincount(gap_seg, weights=gaps, minlength=n_seg)
    ok = n_gaps >= 2
    mean = np.zeros(n_seg)
    mean[ok] = total[ok] / n_gaps[ok]
    dev = gaps - mean[gap_seg]
    var = np.zeros(n_seg)
    sq = np.bincount(gap_seg, weights=dev * dev, minlength=n_seg)
    var[ok] = sq[ok] / n_gaps[ok]
    ok &= mean > 0
    out[ok] = np.sqrt(var[ok]) / mean[ok]
    return out


def nearest_rank_index(m: npt.ArrayLike, q: tuple[int, int]) -> I64:
    """0-based index of the nearest-rank q-quantile among ``m`` sorted values:
    ``ceil(q m) - 1`` in integer arithmetic, at least 0. The SQL of both stores uses the same
    expression (``offline.py``)."""
    num, den = q
    mm = np.asarray(m, dtype=np.int64)
    return np.maximum((num * mm + den - 1) // den - 1, 0)


def segmented_quantile(values: F64, offsets: npt.NDArray[np.intp], q: tuple[int, int]) -> F64:
    """Nearest-rank quantile per segment of the finite values; NaN where a segment has none."""
    n_seg = offsets.size - 1
    out = np.full(n_seg, np.nan)
    if values.size == 0:
        return out
    seg = _segment_ids(offsets)
    known = np.isfinite(values)
    v = values[known]
    s = seg[known]
    order = np.lexsort((v, s))
    v = v[order]
    counts = np.bincount(s, minlength=n_seg)
    first = offsets_from_lengths(counts)[:-1]
    has = counts > 0
    out[has] = v[first[has] + nearest_rank_index(counts[has], q)]
    return out


# -- the per-window aggregates and the rows built from them ----------------------------------


@dataclass(frozen=True, slots=True)
class WindowAggregates:
    """What the store's SQL (or the online NumPy twin) computes per (client, window).

    Rows ordered by (client_id, window). Integer counts, and exact elements for quantiles (NaN
    when no response time is known), so the ratios are taken in one place (:func:`assemble`)
    and both stores give bit-identical features.
    """

    client_id: ObjArray
    window: I64  #: window index k (start = k * W)
    n: I64
    n_2xx: I64
    n_4xx: I64  #: 4xx except 429
    n_5xx: I64
    n_429: I64
    n_rt: I64  #: requests with a known response time
    rt_p50: F64
    rt_p99: F64
    peak_1s: I64
    peak_10s: I64
    peak_60s: I64
    first_us: I64  #: the client's first event ever (before the window's end)
    min_us: I64  #: first and last arrival in the window (a consistency check of the join)
    max_us: I64
    #: per row: the window's totals over every client
    win_n: I64
    win_5xx: I64
    win_p99: F64


@dataclass(frozen=True, slots=True)
class FeatureFrame:
    """Feature rows: one per (client, window), ``X`` in :data:`FEATURE_NAMES` order."""

    client_id: ObjArray
    window_start_us: I64
    X: F64
    r_star: F64
    b_star: F64
    window_s: float
    label_horizon_s: float
    schema_version: str = FEATURE_SCHEMA_VERSION
    feature_names: tuple[str, ...] = field(default=FEATURE_NAMES)

    def __len__(self) -> int:
        return int(self.window_start_us.size)

    def column(self, name: str) -> F64:
        try:
            return self.X[:, self.feature_names.index(name)]
        except ValueError:
            raise KeyError(f"no feature {name!r}") from None

    def as_columns(self) -> dict[str, npt.NDArray[Any]]:
        """Named columns (client_id, window_start_us, every feature): the Parquet layout."""
        cols: dict[str, npt.NDArray[Any]] = {
            "client_id": self.client_id,
            "window_start_us": self.window_start_us,
        }
        for i, name in enumerate(self.feature_names):
            cols[name] = np.ascontiguousarray(self.X[:, i])
        return cols

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> FeatureFrame:
        return FeatureFrame(
            client_id=self.client_id[index],
            window_start_us=self.window_start_us[index],
            X=self.X[index],
            r_star=self.r_star[index],
            b_star=self.b_star[index],
            window_s=self.window_s,
            label_horizon_s=self.label_horizon_s,
            schema_version=self.schema_version,
            feature_names=self.feature_names,
        )

    @classmethod
    def empty(cls, *, window_s: float, label_horizon_s: float) -> FeatureFrame:
        return cls(
            client_id=np.empty(0, dtype=object),
            window_start_us=np.empty(0, dtype=np.int64),
            X=np.empty((0, len(FEATURE_NAMES))),
            r_star=np.empty(0),
            b_star=np.empty(0),
            window_s=window_s,
            label_horizon_s=label_horizon_s,
        )

    @classmethod
    def concat(cls, frames: Sequence[FeatureFrame]) -> FeatureFrame:
        if not frames:
            raise ValueError("nothing to concatenate")
        head = frames[0]
        return cls(
            client_id=np.concatenate([f.client_id for f in frames]),
            window_start_us=np.concatenate([f.window_start_us for f in frames]),
            X=np.concatenate([f.X for f in frames]),
            r_star=np.concatenate([f.r_star for f in frames]),
            b_star=np.concatenate([f.b_star for f in frames]),
            window_s=head.window_s,
            label_horizon_s=head.label_horizon_s,
        )


def check_segments(agg: WindowAggregates, ts_us: I64, offsets: npt.NDArray[np.intp]) -> None:
    """The ordered timestamps must line up with the aggregate rows (same order, same counts):
    a mismatch would pair one client's arrivals with another's counts, silently."""
    if offsets[-1] != ts_us.size or not np.array_equal(np.diff(offsets), agg.n):
        raise ValueError("timestamps and per-window counts disagree")
    if agg.n.size and (
        not np.array_equal(ts_us[offsets[:-1]], agg.min_us)
        or not np.array_equal(ts_us[offsets[1:] - 1], agg.max_us)
    ):
        raise ValueError("timestamps and per-window aggregates are not in the same order")


def assemble(
    agg: WindowAggregates,
    ts_us: I64,
    *,
    window_us: int,
    horizon_us: int,
) -> FeatureFrame:
    """Feature rows from the aggregates and every row's arrival times (``ts_us``, ordered by
    (client, window, time), ``agg.n[i]`` of them per row). The one path both offline
    (store SQL) and online (rolling state) features take."""
    offsets = offsets_from_lengths(agg.n)
    check_segments(agg, ts_us, offsets)
    n_rows = agg.n.size
    start_us = agg.window * window_us
    seg = _segment_ids(offsets)
    rel_us = ts_us - start_us[seg]
    if rel_us.size and (rel_us.min() < 0 or rel_us.max() >= window_us):
        raise ValueError("an arrival lies outside its window")
    rel_s = rel_us / US
    window_s = window_us / US
    horizon_s = horizon_us / US

    peak_h = segmented_sliding_peak(rel_us, offsets, horizon_us)
    r_star = peak_h / horizon_s
    rates = np.column_stack([np.broadcast_to(REFERENCE_RATES, (n_rows, 3)), r_star])
    env = segmented_envelope(rel_s, offsets, rates)
    b_star = label_capacity(env[:, 3])

    n = agg.n.astype(np.float64)
    safe_n = np.maximum(n, 1.0)
    hour = ((start_us // US) % 86_400 + (start_us % US) / US) / 3_600.0
    angle = 2.0 * math.pi * hour / 24.0
    columns = {
        "n_requests": n,
        "rate_mean": n / window_s,
        "peak_rate_1s": agg.peak_1s / 1.0,
        "peak_rate_10s": agg.peak_10s / 10.0,
        "peak_rate_60s": agg.peak_60s / 60.0,
        "bstar_r0_1": env[:, 0],
        "bstar_r1": env[:, 1],
        "bstar_r10": env[:, 2],
        "burstiness_cv": segmented_cv(rel_s, offsets),
        "frac_2xx": agg.n_2xx / safe_n,
        "frac_4xx": agg.n_4xx / safe_n,
        "frac_5xx": agg.n_5xx / safe_n,
        "frac_429": agg.n_429 / safe_n,
        "latency_p50_ms": np.nan_to_num(agg.rt_p50, nan=0.0),
        "latency_p99_ms": np.nan_to_num(agg.rt_p99, nan=0.0),
        "frac_latency_unknown": (agg.n - agg.n_rt) / safe_n,
        "traffic_share": n / np.maximum(agg.win_n, 1),
        "global_p99_ms": np.nan_to_num(agg.win_p99, nan=0.0),
        "global_5xx_frac": agg.win_5xx / np.maximum(agg.win_n, 1),
        "hour_sin": np.sin(angle),
        "hour_cos": np.cos(angle),
        "seen_s": (start_us + window_us - agg.first_us) / US,
        "r_star": r_star,
        "b_star": b_star,
    }
    matrix = np.empty((n_rows, len(FEATURE_NAMES)), dtype=np.float64)
    for i, name in enumerate(FEATURE_NAMES):
        matrix[:, i] = columns[name]
    return FeatureFrame(
        client_id=agg.client_id,
        window_start_us=start_us,
        X=matrix,
        r_star=r_star,
        b_star=b_star,
        window_s=window_s,
        label_horizon_s=horizon_s,
    )


def aggregates_from_columns(columns: Mapping[str, npt.NDArray[Any]]) -> WindowAggregates:
    """Named columns (as a store's query returns them; the window index as ``win``) to typed
    aggregates."""
    ints = (
        "n",
        "n_2xx",
        "n_4xx",
        "n_5xx",
        "n_429",
        "n_rt",
        "peak_1s",
        "peak_10s",
        "peak_60s",
        "first_us",
        "min_us",
        "max_us",
        "win_n",
        "win_5xx",
    )
    floats = ("rt_p50", "rt_p99", "win_p99")
    kwargs: dict[str, Any] = {"window": np.asarray(columns["win"]).astype(np.int64)}
    for name in ints:
        kwargs[name] = np.asarray(columns[name]).astype(np.int64)
    for name in floats:
        kwargs[name] = np.asarray(columns[name], dtype=np.float64)
    client = np.asarray(columns["client_id"])
    if client.dtype != object:
        client = client.astype(object)
    kwargs["client_id"] = client
    return WindowAggregates(**kwargs)


def aggregate_events(
    batch: EventBatch,
    *,
    window_us: int,
    first_seen_us: Mapping[str, int] | None = None,
) -> tuple[WindowAggregates, I64]:
    """The NumPy twin of the stores' feature SQL (``offline.py``): per (client, window)
    aggregates of ``batch`` and its arrival times in (client, window, time) order.

    ``first_seen_us``: first events known from before ``batch`` (the online state); a client's
    first event is the earlier of that and its first in ``batch``.
    """
    if len(batch) == 0:
        empty_i = np.empty(0, dtype=np.int64)
        empty_f = np.empty(0, dtype=np.float64)
        agg = WindowAggregates(
            client_id=np.empty(0, dtype=object),
            window=empty_i,
            n=empty_i,
            n_2xx=empty_i,
            n_4xx=empty_i,
            n_5xx=empty_i,
            n_429=empty_i,
            n_rt=empty_i,
            rt_p50=empty_f,
            rt_p99=empty_f,
            peak_1s=empty_i,
            peak_10s=empty_i,
            peak_60s=empty_i,
            first_us=empty_i,
            min_us=empty_i,
            max_us=empty_i,
            win_n=empty_i,
            win_5xx=empty_i,
            win_p99=empty_f,
        )
        return agg, empty_i
    clients, client_index = np.unique(batch.client_id, return_inverse=True)
    win_all = batch.ts_us // window_us
    order = np.lexsort((batch.ts_us, win_all, client_index))
    ts = batch.ts_us[order]
    cl = client_index[order]
    win = win_all[order]
    status = batch.status_code[order].astype(np.int64)
    rt = batch.response_time_ms[order]

    boundary = np.flatnonzero((np.diff(cl) != 0) | (np.diff(win) != 0)) + 1
    starts = np.concatenate(([0], boundary)).astype(np.intp)
    offsets = np.append(starts, ts.size).astype(np.intp)
    k = starts.size
    seg = _segment_ids(offsets)

    def count(mask: npt.NDArray[np.bool_]) -> I64:
        return np.bincount(seg[mask], minlength=k).astype(np.int64)

    seg_win = win[starts]
    seg_client = cl[starts]
    rel = ts - seg_win[seg] * window_us

    # The client's first arrival in the batch: the first row of its first segment.
    client_first = np.full(clients.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(client_first, seg_client, ts[starts])
    if first_seen_us:
        known = np.fromiter(
            (first_seen_us.get(c, np.iinfo(np.int64).max) for c in clients),
            dtype=np.int64,
            count=clients.size,
        )
        client_first = np.minimum(client_first, known)

    # Every client's events of a window, for the window's totals.
    windows, win_index = np.unique(win, return_inverse=True)
    by_window = np.argsort(win_index, kind="stable")
    w_offsets = offsets_from_lengths(np.bincount(win_index, minlength=windows.size))
    win_p99 = segmented_quantile(rt[by_window], w_offsets, P99)
    win_n = np.bincount(win_index, minlength=windows.size)
    win_5xx = np.bincount(win_index[(status >= 500) & (status <= 599)], minlength=windows.size)
    row_win = np.searchsorted(windows, seg_win)

    peaks = [segmented_bucket_peak(rel, offsets, size * US) for size in PEAK_BUCKETS_S]
    agg = WindowAggregates(
        client_id=clients[seg_client].astype(object),
        window=seg_win.astype(np.int64),
        n=np.diff(offsets).astype(np.int64),
        n_2xx=count((status >= 200) & (status <= 299)),
        n_4xx=count((status >= 400) & (status <= 499) & (status != 429)),
        n_5xx=count((status >= 500) & (status <= 599)),
        n_429=count(status == 429),
        n_rt=count(np.isfinite(rt)),
        rt_p50=segmented_quantile(rt, offsets, P50),
        rt_p99=segmented_quantile(rt, offsets, P99),
        peak_1s=peaks[0],
        peak_10s=peaks[1],
        peak_60s=peaks[2],
        first_us=client_first[seg_client],
        min_us=ts[starts],
        max_us=ts[offsets[1:] - 1],
        win_n=win_n[row_win].astype(np.int64),
        win_5xx=win_5xx[row_win].astype(np.int64),
        win_p99=win_p99[row_win],
    )
    return agg, ts
