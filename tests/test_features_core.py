"""The feature and label arithmetic (openclaw.features.core): no store, no network."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openclaw.features.core import (
    FEATURE_NAMES,
    LABEL_GUARD,
    P50,
    P99,
    US,
    aggregate_events,
    assemble,
    envelope,
    envelope_naive,
    label_capacity,
    nearest_rank_index,
    offsets_from_lengths,
    segmented_bucket_peak,
    segmented_cv,
    segmented_envelope,
    segmented_quantile,
    segmented_sliding_peak,
    sliding_peak_count,
    window_label,
)
from openclaw.limiter.core import BucketParams, BucketState, refill_and_take
from openclaw.telemetry.events import EventBatch
from openclaw.testing.traces import NASA

# Arrival times in whole microseconds within a 300 s window; small ranges make ties likely.
times_us = st.lists(
    st.one_of(
        st.integers(0, 20),
        st.integers(0, 5_000_000),
        st.integers(0, 300_000_000 - 1),
    ),
    min_size=0,
    max_size=60,
).map(sorted)
rates = st.one_of(
    st.sampled_from([0.0, 0.1, 1.0, 10.0, 1 / 3, 17 / 60]),
    st.floats(0.0, 1000.0, allow_nan=False, allow_infinity=False),
)


def naive_sliding(ts_us: list[int], horizon_us: int) -> int:
    return max((sum(1 for u in ts_us if t <= u < t + horizon_us) for t in ts_us), default=0)


def replay(ts_s: npt.NDArray[np.float64], capacity: float, rate: float) -> int:
    """Denials of the real engine, a bucket starting full, one request of cost 1 per arrival."""
    params = BucketParams(capacity, rate)
    state: BucketState | None = None
    denied = 0
    for t in ts_s.tolist():
        new, decision = refill_and_take([] if state is None else [state], [params], now=t, cost=1.0)
        if decision.allowed:
            assert new is not None
            state = new[0]
        else:
            denied += 1
    return denied


# -- the envelope ------------------------------------------------------------------------------


@given(times_us, rates)
def test_envelope_matches_the_recursion(ts: list[int], rate: float) -> None:
    ts_s = [t / US for t in ts]
    expected = envelope_naive(ts_s, rate)
    got = envelope(ts_s, rate)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


@given(
    st.lists(st.tuples(st.integers(0, 10_000_000), st.floats(0.0, 50.0)), max_size=40).map(sorted),
    rates,
)
def test_envelope_with_costs_matches_the_recursion(
    arrivals: list[tuple[int, float]], rate: float
) -> None:
    ts_s = [t / US for t, _ in arrivals]
    costs = [c for _, c in arrivals]
    assert envelope(ts_s, rate, costs) == pytest.approx(
        envelope_naive(ts_s, rate, costs), rel=1e-9, abs=1e-9
    )


def test_envelope_by_hand() -> None:
    # Three at once, then one a second later drained at 1/s: backlog 3, then 3 - 1 + 1 = 3.
    assert envelope([0.0, 0.0, 0.0, 1.0], 1.0) == 3.0
    # Drained faster than they come: each arrival alone is the peak.
    assert envelope([0.0, 1.0, 2.0], 10.0) == 1.0
    # No drain: the bucket must hold them all.
    assert envelope([0.0, 5.0, 9.0], 0.0) == 3.0
    assert envelope([], 1.0) == 0.0
    # Falls in r.
    ts = [0.0, 0.1, 0.2, 3.0, 3.05]
    assert envelope(ts, 0.1) >= envelope(ts, 1.0) >= envelope(ts, 10.0)


@given(st.lists(times_us, min_size=1, max_size=12), st.lists(rates, min_size=1, max_size=3))
def test_segmented_envelope_is_each_segment_alone(
    segments: list[list[int]], rs: list[float]
) -> None:
    offsets = offsets_from_lengths([len(s) for s in segments])
    flat = np.array([t / US for s in segments for t in s], dtype=np.float64)
    out = segmented_envelope(flat, offsets, np.array(rs))
    assert out.shape == (len(segments), len(rs))
    for i, seg in enumerate(segments):
        for k, r in enumerate(rs):
            expected = envelope_naive([t / US for t in seg], r)
            assert out[i, k] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # One rate per segment.
    per = np.array(rs[:1] * len(segments))[:, None]
    out1 = segmented_envelope(flat, offsets, per)
    assert np.array_equal(out1[:, 0], out[:, 0])


# -- the label against the real engine ------------------------------------------------------------


@settings(max_examples=300)
@given(times_us.filter(bool), st.sampled_from([1.0, 7.0, 60.0]))
def test_label_bucket_admits_the_whole_window_and_no_smaller_one_does(
    ts: list[int], horizon_s: float
) -> None:
    ts_s = np.array(ts, dtype=np.float64) / US
    r_star, b_star = window_label(ts_s, horizon_s=horizon_s)
    assert r_star == sliding_peak_count(ts_s, horizon_s) / horizon_s
    assert replay(ts_s, b_star, r_star) == 0
    assert replay(ts_s, b_star * (1 - 10 * LABEL_GUARD), r_star) > 0


def test_label_holds_on_a_long_busy_window() -> None:
    # Many requests: float rounding in the engine adds up over them; the guard still covers it.
    rng = np.random.default_rng(3)
    ts_s = np.sort(rng.integers(0, 300 * US, 20_000)) / US
    r_star, b_star = window_label(ts_s, horizon_s=60.0)
    assert replay(ts_s, b_star, r_star) == 0
    assert replay(ts_s, b_star * (1 - 10 * LABEL_GUARD), r_star) > 0


def test_label_capacity_is_the_envelope_plus_the_guard() -> None:
    assert label_capacity(3.0) == pytest.approx(3.0 * (1 + LABEL_GUARD), rel=1e-15)
    assert LABEL_GUARD <= 1e-9


# -- sliding and aligned peaks ------------------------------------------------------------------


@given(times_us, st.sampled_from([1, 999_999, 1_000_000, 10_000_000, 60_000_000]))
def test_sliding_peak_matches_counting_every_interval(ts: list[int], horizon_us: int) -> None:
    assert sliding_peak_count([t / US for t in ts], horizon_us / US) == naive_sliding(
        ts, horizon_us
    )


def test_sliding_peak_is_half_open() -> None:
    # 0 and 1 s are not in one 1-second interval [a, a+1); 0 and 0.999999 are.
    assert sliding_peak_count([0.0, 1.0], 1.0) == 1
    assert sliding_peak_count([0.0, 0.999999], 1.0) == 2
    assert sliding_peak_count([5.0, 5.0, 5.0], 1.0) == 3


@given(st.lists(times_us, min_size=1, max_size=10))
def test_segmented_peaks_are_each_segment_alone(segments: list[list[int]]) -> None:
    offsets = offsets_from_lengths([len(s) for s in segments])
    flat = np.array([t for s in segments for t in s], dtype=np.int64)
    sliding = segmented_sliding_peak(flat, offsets, 10 * US)
    aligned = segmented_bucket_peak(flat, offsets, 10 * US)
    for i, seg in enumerate(segments):
        assert sliding[i] == naive_sliding(seg, 10 * US)
        buckets = [t // (10 * US) for t in seg]
        assert aligned[i] == max((buckets.count(b) for b in buckets), default=0)
        assert aligned[i] <= sliding[i]


# -- burstiness and quantiles -------------------------------------------------------------------


@given(st.lists(times_us, min_size=1, max_size=10))
def test_cv_is_std_over_mean_of_the_gaps(segments: list[list[int]]) -> None:
    offsets = offsets_from_lengths([len(s) for s in segments])
    flat = np.array([t / US for s in segments for t in s], dtype=np.float64)
    cv = segmented_cv(flat, offsets)
    for i, seg in enumerate(segments):
        gaps = np.diff(np.array(seg, dtype=np.float64) / US)
        if len(seg) < 3 or gaps.mean() == 0:
            assert cv[i] == 0.0
        else:
            assert cv[i] == pytest.approx(gaps.std() / gaps.mean(), rel=1e-9, abs=1e-12)


@given(
    st.lists(
        st.lists(st.one_of(st.floats(0, 1e4, allow_nan=False), st.just(math.nan)), max_size=30),
        min_size=1,
        max_size=6,
    )
)
def test_quantile_is_the_nearest_rank_element(segments: list[list[float]]) -> None:
    offsets = offsets_from_lengths([len(s) for s in segments])
    flat = np.array([v for s in segments for v in s], dtype=np.float64)
    for q in (P50, P99):
        got = segmented_quantile(flat, offsets, q)
        for i, seg in enumerate(segments):
            known = sorted(v for v in seg if not math.isnan(v))
            if not known:
                assert math.isnan(got[i])
                continue
            # The smallest value with at least q of the values at or below it.
            frac = q[0] / q[1]
            expected = next(v for k, v in enumerate(known, 1) if k >= frac * len(known) - 1e-12)
            assert got[i] == expected


def test_nearest_rank_index_in_integers() -> None:
    assert nearest_rank_index([1, 2, 3, 4, 10, 100, 101], P50).tolist() == [0, 0, 1, 1, 4, 49, 50]
    assert nearest_rank_index([1, 10, 100, 101, 200], P99).tolist() == [0, 9, 98, 99, 197]


# -- rows ----------------------------------------------------------------------------------------


def batch_of(
    rows: list[tuple[str, int, int, float]],
) -> EventBatch:
    """(client, ts_us, status, response time or NaN) rows as a batch."""
    n = len(rows)

    def objects(values: list[object]) -> npt.NDArray[np.object_]:
        out = np.empty(n, dtype=object)
        out[:] = values
        return out

    return EventBatch(
        event_id=objects([f"e{i}" for i in range(n)]),
        client_id=objects([r[0] for r in rows]),
        ts_us=np.array([r[1] for r in rows], dtype=np.int64),
        status_code=np.array([r[2] for r in rows], dtype=np.int16),
        response_time_ms=np.array([r[3] for r in rows], dtype=np.float64),
        route=objects([None] * n),
        method=objects([None] * n),
        bytes=np.full(n, -1, dtype=np.int64),
    )


def test_rows_by_hand() -> None:
    w = 300 * US
    base = 1_000 * w  # window 1000; its start is 83:20:00 after the epoch (11:20 UTC)
    events = batch_of(
        [
            ("a", base + 0, 200, 10.0),
            ("a", base + 0, 200, 30.0),
            ("a", base + 500_000, 429, math.nan),
            ("a", base + 2 * US, 503, 20.0),
            ("b", base + 100 * US, 404, 5.0),
            ("a", base + w + 1, 200, 1.0),  # the next window
        ]
    )
    agg, ts = aggregate_events(events, window_us=w, first_seen_us={"a": base - 60 * US})
    frame = assemble(agg, ts, window_us=w, horizon_us=60 * US)
    assert frame.client_id.tolist() == ["a", "a", "b"]
    assert frame.window_start_us.tolist() == [base, base + w, base]
    row = dict(zip(FEATURE_NAMES, frame.X[0].tolist(), strict=True))
    assert row["n_requests"] == 4
    assert row["rate_mean"] == 4 / 300
    assert row["peak_rate_1s"] == 3  # three in [0, 1 s)
    assert row["peak_rate_10s"] == 4 / 10
    assert row["peak_rate_60s"] == 4 / 60
    assert row["frac_2xx"] == 0.5
    assert row["frac_429"] == 0.25
    assert row["frac_5xx"] == 0.25
    assert row["frac_4xx"] == 0.0  # 429 is counted apart
    assert row["latency_p50_ms"] == 20.0  # 2nd of 10, 20, 30
    assert row["latency_p99_ms"] == 30.0
    assert row["frac_latency_unknown"] == 0.25
    assert row["traffic_share"] == 4 / 5
    assert row["global_p99_ms"] == 30.0
    assert row["global_5xx_frac"] == 1 / 5
    hour = (base // US % 86_400) / 3600
    assert row["hour_sin"] == pytest.approx(math.sin(2 * math.pi * hour / 24))
    assert row["hour_cos"] == pytest.approx(math.cos(2 * math.pi * hour / 24))
    assert row["seen_s"] == 60 + 300
    assert row["r_star"] == 4 / 60
    assert row["b_star"] == pytest.approx(envelope([0, 0, 0.5, 2.0], 4 / 60), rel=2e-9)
    assert row["bstar_r10"] == pytest.approx(envelope([0, 0, 0.5, 2.0], 10.0))
    assert row["burstiness_cv"] == pytest.approx(np.std([0, 0.5, 1.5]) / np.mean([0, 0.5, 1.5]))
    assert frame.r_star[0] == row["r_star"]
    assert frame.b_star[0] == row["b_star"]
    # b: one request, no latency problem; first seen in the window itself.
    b = dict(zip(FEATURE_NAMES, frame.X[2].tolist(), strict=True))
    assert b["n_requests"] == 1
    assert b["frac_4xx"] == 1.0
    assert b["burstiness_cv"] == 0.0
    assert b["seen_s"] == 200
    assert b["b_star"] == pytest.approx(1.0)


def test_nasa_trace_peaks() -> None:
    """The README's figures: one host sent at most 11 requests in 1 s, 17 in 10 s, 29 in 60 s.

    The whole trace lies in one UTC day, so a one-day window (epoch-aligned) holds all of it:
    the label's sliding peak over H is the README's peak over H.
    """
    host: list[str] = []
    ts: list[int] = []
    with NASA.open() as f:
        header = next(f).rstrip("\n").split("\t")
        at_host, at_time, at_status = (
            header.index("host"),
            header.index("time"),
            header.index("response"),
        )
        status: list[int] = []
        for line in f:
            fields = line.rstrip("\n").split("\t")
            host.append(fields[at_host])
            ts.append(int(fields[at_time]) * US)
            status.append(int(fields[at_status]))
    n = len(ts)
    assert n == 33_996
    events = EventBatch(
        event_id=np.array([f"n{i}" for i in range(n)], dtype=object),
        client_id=np.array(host, dtype=object),
        ts_us=np.array(ts, dtype=np.int64),
        status_code=np.array(status, dtype=np.int16),
        response_time_ms=np.full(n, np.nan),
        route=np.full(n, None, dtype=object),
        method=np.full(n, None, dtype=object),
        bytes=np.full(n, -1, dtype=np.int64),
    )
    day = 86_400 * US
    agg, t = aggregate_events(events, window_us=day)
    assert agg.n.size == 2_582  # one row per host
    peaks = {}
    for horizon in (1, 10, 60):
        frame = assemble(agg, t, window_us=day, horizon_us=horizon * US)
        peaks[horizon] = round(float(frame.r_star.max()) * horizon)
        assert frame.column("frac_latency_unknown").min() == 1.0
        assert frame.column("latency_p99_ms").max() == 0.0
    assert peaks == {1: 11, 10: 17, 60: 29}
    # Timestamps are whole seconds: the aligned 1 s peak is the sliding one.
    assert frame.column("peak_rate_1s").max() == 11
    assert frame.column("peak_rate_10s").max() * 10 <= 17
    assert frame.column("traffic_share").sum() == pytest.approx(1.0)
    # The busiest second of all traffic: 17 requests.
    assert np.unique(events.ts_us, return_counts=True)[1].max() == 17
