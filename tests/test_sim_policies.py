"""Policies' pure parts: labels of segments, the static grid search, quantiles, the governor's
AIMD state machine, allocations, names."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openclaw.features.core import window_label
from openclaw.policy.governor import GovernorConfig, GovernorState, p99_breaks
from openclaw.sim.labels import segment
from openclaw.sim.policies import (
    Allocation,
    _quantile,
    check_policy_names,
    fit_static,
    make_policy,
)

US = 1_000_000
W_US = 300 * US
H_US = 60 * US


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3 * W_US - 1)), min_size=1, max_size=80)
)
def test_segment_labels_are_the_feature_codes_window_labels(rows: list[tuple[int, int]]) -> None:
    client = np.array([c for c, _ in rows], np.int64)
    ts = np.array([t for _, t in rows], np.int64) + 1000 * W_US
    seg = segment(ts, client, window_us=W_US, horizon_us=H_US)
    assert int(seg.n.sum()) == len(rows)
    for i in range(len(seg)):
        mine = (client == seg.client[i]) & (ts // W_US == seg.window[i])
        rel = np.sort(ts[mine] - seg.window[i] * W_US) / US
        r, b = window_label(rel, horizon_s=60.0)
        assert seg.r_star[i] == r
        assert seg.b_star[i] == pytest.approx(b, rel=1e-12)  # relative to another origin
        assert seg.n[i] == mine.sum()
    # envelope_at on each segment's own r* is the label without its guard.
    env = seg.envelope_at(seg.r_star)
    assert np.all(env <= seg.b_star)
    assert np.allclose(env, seg.b_star, rtol=1e-8)


def test_static_fit_keeps_within_its_budget_and_a_smaller_budget_costs_more() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    client = rng.integers(0, 300, n)
    ts = np.sort(rng.integers(0, 4 * W_US, n)) + 1000 * W_US
    # A few heavy bursts that a tight budget must pay for.
    burst = np.arange(40) * 10_000 + 1000 * W_US + 5 * US
    seg = segment(
        np.concatenate([ts, burst]),
        np.concatenate([client, np.full(40, 999)]),
        window_us=W_US,
        horizon_us=H_US,
    )
    rates = np.geomspace(1 / 600, 50, 64)
    loose = fit_static(seg, budget=0.05, rates=rates, window_s=300.0)
    tight = fit_static(seg, budget=0.001, rates=rates, window_s=300.0)
    assert loose.throttled_bound <= 0.05
    assert tight.throttled_bound <= 0.001
    assert tight.capacity + tight.refill_rate * 300 > loose.capacity + loose.refill_rate * 300
    # The chosen bucket admits every segment it does not count as throttled.
    need = seg.envelope_at(np.full(len(seg), tight.refill_rate))
    spared = need <= tight.capacity
    assert seg.n[~spared].sum() / seg.n.sum() == pytest.approx(tight.throttled_bound)


@given(st.lists(st.floats(0, 1000), min_size=1, max_size=30), st.floats(0, 1))
def test_quantile_is_numpys_linear_quantile(values: list[float], q: float) -> None:
    assert _quantile(sorted(values), q) == pytest.approx(float(np.quantile(values, q)))


@given(st.lists(st.floats(0, 0.5), min_size=1, max_size=300))
def test_p99_breaks_is_the_nearest_rank_p99_above_the_slo(latencies: list[float]) -> None:
    slo = 0.2
    ordered = sorted(latencies)
    rank = -(-99 * len(ordered) // 100)  # ceil(0.99 n)
    expected = ordered[rank - 1] > slo
    assert p99_breaks(len(latencies), sum(v > slo for v in latencies)) == expected
    assert not p99_breaks(0, 0)


def test_governor_cuts_hot_clients_first_then_everyone_and_recovers_slowly() -> None:
    config = GovernorConfig(decrease=0.5, increase=0.1, floor=0.05, hot_grace=2)
    gov = GovernorState(config, slo_error_rate=0.01)
    assert gov.observe(100, 0, 0) is False  # healthy at 1: nothing to change
    gov.observe(100, 5, 0)  # p99 above the SLO
    assert (gov.hot, gov.m_all) == (0.5, 1.0)
    gov.observe(100, 0, 2)  # error rate above the bound
    assert (gov.hot, gov.m_all) == (0.25, 1.0)
    gov.observe(100, 5, 0)  # a third bad interval in a row: everyone
    assert (gov.hot, gov.m_all) == (0.125, 0.5)
    for _ in range(20):
        gov.observe(100, 50, 50)
    assert gov.hot == gov.m_all == 0.05  # the floor
    gov.observe(100, 0, 0)
    assert gov.m_all == pytest.approx(0.15)  # additive recovery
    assert gov.hot == pytest.approx(0.15)
    for _ in range(20):
        gov.observe(0, 0, 0)  # nothing completed is healthy
    assert gov.hot == gov.m_all == 1.0


def test_allocation_dense_gives_listed_clients_their_bucket_and_others_the_default() -> None:
    alloc = Allocation(np.array([1, 3]), np.array([5.0, 7.0]), np.array([0.5, 0.7]), (2.0, 0.2))
    cap, rate = alloc.dense(5)
    assert cap.tolist() == [2.0, 5.0, 2.0, 7.0, 2.0]
    assert rate.tolist() == [0.2, 0.5, 0.2, 0.7, 0.2]
    cap, _ = Allocation.unlimited().dense(2)
    assert np.isinf(cap).all()


def test_policy_names() -> None:
    check_policy_names(["none", "static", "static+gov", "percentile+gov", "oracle"])
    with pytest.raises(ValueError, match="unknown policy 'magic'"):
        check_policy_names(["magic"])
    with pytest.raises(ValueError, match="finite"):
        check_policy_names(["none+gov"])
    from openclaw.sim.policies import PolicyConfig

    assert make_policy("persistence+gov", config=PolicyConfig()).name == "persistence+gov"
    with pytest.raises(ValueError, match="oracle needs"):
        make_policy("oracle", config=PolicyConfig())
