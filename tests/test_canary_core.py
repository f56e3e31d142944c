"""The canary's pure core: checks, transitions, the histogram quantile, the stable slice, and
the model-health judgement of one window."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openclaw.features.core import FEATURE_INDEX, FEATURE_NAMES, FeatureFrame
from openclaw.rollout.canary import (
    CanaryConfig,
    Check,
    Observation,
    abort,
    advance,
    histogram_quantile,
    in_slice,
    judge,
    judge_window,
    start,
)

CONFIG = CanaryConfig(
    interval_s=60.0, shadow_intervals=2, step_weight=20.0, max_weight=50.0, threshold=3
)
GOOD = Observation(
    decisions=1000,
    latency_p99_s=0.004,
    error_rate=0.0,
    clients=50,
    underflows=0,
    prediction_error=0.7,
)
PASS = judge(GOOD, CONFIG)
FAIL = judge(
    Observation(
        decisions=1000,
        latency_p99_s=0.5,
        error_rate=0.0,
        clients=50,
        underflows=0,
        prediction_error=0.7,
    ),
    CONFIG,
)


def run(outcomes: str) -> list[tuple[str, float, int]]:
    """Drive a canary through analyses ('p' pass, 'f' fail): (phase, weight, failed) after each."""
    status = start("model-20250802", "model-20250801", now=0.0, reason="test")
    out: list[tuple[str, float, int]] = []
    for i, o in enumerate(outcomes, start=1):
        status = advance(status, PASS if o == "p" else FAIL, CONFIG, now=60.0 * i)
        out.append((status.phase, status.weight, status.failed_checks))
    return out


def test_checks_pass_and_fail_on_their_limits() -> None:
    assert all(c.passed for c in PASS)
    assert [c.name for c in FAIL if not c.passed] == ["latency_p99"]
    at_limit = judge(
        Observation(1, 0.2, 0.01, 50, 1, 2.0), CONFIG
    )  # underflow 1/50 = 0.02: every value exactly at its limit passes
    assert all(c.passed for c in at_limit)


def test_no_data_fails_every_check_that_has_nothing_to_judge() -> None:
    checks = judge(Observation(0, None, None, 0, 0, None), CONFIG)
    assert not any(c.passed for c in checks)
    assert "no data" in checks[0].describe()
    nan = judge(Observation(10, math.nan, 0.0, 5, 0, 0.1), CONFIG)
    assert not nan[0].passed


def test_shadow_then_steps_to_the_max_then_promotion() -> None:
    assert run("ppppp") == [
        ("shadow", 0.0, 0),
        ("canary", 20.0, 0),
        ("canary", 40.0, 0),
        ("canary", 50.0, 0),  # capped at max_weight
        ("promoted", 50.0, 0),
    ]


def test_failures_count_in_total_not_in_a_row() -> None:
    # Never two failures in a row, yet the third one rolls back.
    trace = run("pfpfppf")
    assert trace[-1] == ("rolled_back", 0.0, 3)
    assert [t[2] for t in trace] == [0, 1, 1, 2, 2, 2, 3]
    # A failed analysis holds the weight; a pass moves it on.
    assert trace[2] == ("canary", 20.0, 1)


def test_an_ended_canary_does_not_move() -> None:
    status = start("v2", "v1", now=0.0, reason="")
    status = abort(status, now=5.0, reason="by hand")
    assert status.phase == "aborted"
    assert advance(status, PASS, CONFIG, now=60.0) is status
    assert abort(status, now=6.0, reason="again") is status
    assert [e.note for e in status.history] == ["started", "aborted: by hand"]


def test_zero_shadow_intervals_go_straight_to_the_first_step() -> None:
    config = CanaryConfig(shadow_intervals=0, step_weight=10.0, max_weight=10.0, threshold=1)
    status = advance(start("v2", "v1", now=0.0, reason=""), PASS, config, now=1.0)
    assert (status.phase, status.weight) == ("canary", 10.0)
    assert advance(status, PASS, config, now=2.0).phase == "promoted"
    assert advance(status, FAIL, config, now=2.0).phase == "rolled_back"


def test_histogram_quantile_interpolates_like_promql() -> None:
    # 100 observations: 50 <= 0.01, 40 in (0.01, 0.1], 10 in (0.1, 1].
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.01 + 0.09 * 20 / 40)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 9 / 10)
    # Beyond the highest finite bound: that bound (what PromQL answers).
    assert histogram_quantile(0.99, [(0.1, 10.0), (math.inf, 20.0)]) == 0.1
    assert histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.99, []) is None


@given(st.text(min_size=1, max_size=30), st.floats(0, 100), st.floats(0, 100))
def test_the_slice_is_monotone_in_the_weight(client: str, a: float, b: float) -> None:
    low, high = sorted((a, b))
    if in_slice(client, low):
        assert in_slice(client, high)
    assert in_slice(client, 100.0)
    assert not in_slice(client, 0.0)


def test_the_slice_takes_about_its_weight_and_is_stable() -> None:
    clients = [f"client-{i}" for i in range(20_000)]
    share = sum(in_slice(c, 25.0) for c in clients) / len(clients)
    assert 0.24 < share < 0.26
    # CRC-32, not Python's salted hash(): these are fixed across processes.
    assert [in_slice(f"client-{i}", 50.0) for i in range(8)] == [
        in_slice(f"client-{i}", 50.0) for i in range(8)
    ]


def frame(rows: list[tuple[str, int, float, float]], window_s: float = 60.0) -> FeatureFrame:
    """Clients with (n_requests, r*, b*): the envelope's points at 0.1/1/10 req/s are b*."""
    n = len(rows)
    x = np.zeros((n, len(FEATURE_NAMES)))
    for i, (_, count, r, b) in enumerate(rows):
        x[i, FEATURE_INDEX["n_requests"]] = count
        for name in ("bstar_r0_1", "bstar_r1", "bstar_r10"):
            x[i, FEATURE_INDEX[name]] = min(b, count)
        x[i, FEATURE_INDEX["r_star"]] = r
        x[i, FEATURE_INDEX["b_star"]] = b
    return FeatureFrame(
        client_id=np.array([r[0] for r in rows], dtype=object),
        window_start_us=np.zeros(n, dtype=np.int64),
        X=x,
        r_star=x[:, FEATURE_INDEX["r_star"]].copy(),
        b_star=x[:, FEATURE_INDEX["b_star"]].copy(),
        window_s=window_s,
        label_horizon_s=10.0,
    )


def test_judge_window_counts_underflow_for_clients_within_their_history() -> None:
    f = frame(
        [("a", 30, 0.5, 3.0), ("b", 30, 0.5, 3.0), ("new", 30, 0.5, 3.0), ("up", 90, 1.5, 9.0)]
    )
    peaks = {"a": 0.5, "b": 0.6, "up": 1.0}  # "new" has no history; "up" exceeds its own
    predicted = {
        "a": (100.0, 1.0),  # serves it
        "b": (1.0, 0.0),  # cannot: b*(0) = 30 arrivals > 1 token
        "new": (1.0, 0.0),
        "up": (1.0, 0.0),
    }
    n, under, errors = judge_window(f, predicted, peaks, window_s=60.0)
    assert (n, under) == (2, 1)
    a_err = abs(math.log((100.0 + 60.0) / (3.0 + 0.5 * 60.0)))
    b_err = abs(math.log(1.0 / (3.0 + 0.5 * 60.0)))
    assert errors == pytest.approx([a_err, b_err])
    assert judge_window(f, {}, peaks, window_s=60.0) == (0, 0, [])


def test_check_describe_names_the_value_and_limit() -> None:
    assert Check("latency_p99", 0.5, 0.2, False).describe() == "latency_p99 0.5 (limit 0.2): over"
