"""Policies' pure parts: labels of segments, the static grid search, quantiles, the governor's
AIMD state machine, allocations, names."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openclaw.features.core import FeatureFrame, window_label
from openclaw.policy.governor import GovernorConfig, GovernorState, p99_breaks
from openclaw.policy.rules import manifest_defaults
from openclaw.sim.history import Attempts, History
from openclaw.sim.labels import segment
from openclaw.sim.policies import (
    Allocation,
    BucketModel,
    Governed,
    LearnedModelPolicy,
    ModelPolicy,
    PolicyConfig,
    _quantile,
    check_policy_names,
    fit_quota,
    fit_static,
    make_policy,
    resolve_policy,
)

F64 = npt.NDArray[np.float64]
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
    assert make_policy("persistence+gov", config=PolicyConfig()).name == "persistence+gov"
    with pytest.raises(ValueError, match="oracle needs"):
        make_policy("oracle", config=PolicyConfig())


# -- the learned policy's rules (LearnedModelPolicy) --------------------------------------------


class FixedModel:
    """Predicts the same bucket for every row (the rules, not the network, are under test)."""

    def __init__(self, capacity: float, refill_rate: float) -> None:
        self.capacity = capacity
        self.refill_rate = refill_rate

    def predict(self, features: FeatureFrame) -> tuple[F64, F64]:
        n = len(features)
        return np.full(n, self.capacity), np.full(n, self.refill_rate)


FIRST = 1000  # the training part's first window


def training_history() -> History:
    """Three training windows: 200 light clients, and one burst (0.7% of the requests) that a
    budget of 0.1% must admit and one of 1% may throttle."""
    rng = np.random.default_rng(1)
    client = rng.integers(0, 200, 2000)
    ts = np.sort(rng.integers(0, 3 * W_US, 2000)) + FIRST * W_US
    burst = np.arange(15) * 100_000 + FIRST * W_US + 5 * US
    train = segment(
        np.concatenate([ts, burst]),
        np.concatenate([client, np.full(15, 250)]),
        window_us=W_US,
        horizon_us=H_US,
    )
    names = tuple(f"c{i}" for i in range(300))
    return History(names=names, window_us=W_US, horizon_us=H_US, train=train)


def finish_window(
    history: History,
    window: int,
    sent: dict[int, tuple[int, int]],
    *,
    latency_ms: float = 50.0,
) -> None:
    """Close ``window`` with ``sent[c] = (attempts, refused)`` for each client, spread evenly."""
    rows: list[tuple[int, int, int]] = []
    for c, (n, refused) in sent.items():
        for k in range(n):
            rows.append(
                (window * W_US + (k + 1) * (W_US // (n + 1)), c, 429 if k < refused else 200)
            )
    rows.sort()
    history.add(
        Attempts(
            window,
            [c for _, c, _ in rows],
            [t for t, _, _ in rows],
            [s for _, _, s in rows],
            [math.nan if s == 429 else latency_ms for _, _, s in rows],
        )
    )


def learned(model: BucketModel, **knobs: Any) -> tuple[LearnedModelPolicy, History]:
    policy = LearnedModelPolicy(model, config=replace(PolicyConfig(), **knobs))
    history = training_history()
    policy.begin(history)
    return policy, history


def per_window(cap: F64, rate: F64) -> F64:
    return cap + rate * (W_US / US)


def test_clients_without_prediction_get_the_quota_of_the_learned_budget() -> None:
    policy, history = learned(FixedModel(1e6, 1e6))
    rates = np.array([1 / 600])
    static = fit_static(history.train, budget=0.001, rates=rates, window_s=300.0)
    looser = fit_static(history.train, budget=0.01, rates=rates, window_s=300.0)
    # fit_quota is the static grid search at one rate.
    assert policy.tier_default == (static.capacity, 1 / 600)
    assert policy.unhealthy_default == (looser.capacity, 1 / 600)
    # The budget decides: 0.1% of the training requests buys a bigger quota than 1%.
    assert static.capacity > looser.capacity
    alloc = policy.params_for(FIRST + 3, history)  # no finished window yet: nobody predicted
    assert alloc.client.size == 0
    assert alloc.default == policy.tier_default


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 50), st.integers(1, 60)), min_size=1, max_size=40),
    st.floats(0, 0.2),
)
def test_fit_quota_throttles_within_its_budget_and_no_smaller_quota_does(
    rows: list[tuple[float, int]], budget: float
) -> None:
    need = np.array([e for e, _ in rows])
    n = np.array([k for _, k in rows], dtype=np.float64)
    quota = fit_quota(need, n, budget=budget)
    assert quota >= 1.0
    over = need > quota + 1e-9
    assert n[over].sum() <= budget * n.sum() + 1e-9
    # One request less would throttle a segment the budget cannot pay for (or go below 1).
    smaller = quota * (1 - 1e-6) - 1e-6
    if smaller >= 1.0:
        assert n[need > smaller].sum() > budget * n.sum()


def test_a_learned_bucket_is_floored_at_the_tier_default_and_served_as_a_quota() -> None:
    w = FIRST + 3
    for floored in (True, False):
        policy, history = learned(FixedModel(2.0, 0.01), model_floor=floored)
        finish_window(history, w, {3: (4, 0), 7: (2, 0)})
        alloc = policy.params_for(w + 1, history)
        assert sorted(alloc.client.tolist()) == [3, 7]
        d_cap, d_rate = policy.tier_default
        assert np.all(alloc.refill_rate == d_rate)  # the quota's shape: the default's rate
        if floored:
            # Each of capacity and rate raised to the default's (a bucket above both).
            assert np.allclose(alloc.capacity, max(2.0, d_cap) + max(1 / 60, d_rate) * 300)
        else:
            # The prediction as a quota: capacity b + r W (the rate floored at 1/horizon).
            assert np.allclose(alloc.capacity, 2.0 + (1 / 60) * 300)
        assert np.all(per_window(alloc.capacity, alloc.refill_rate) >= 2.0 + 0.01 * 300)
    # A big prediction is kept, as a quota.
    policy, history = learned(FixedModel(80.0, 0.5))
    finish_window(history, w, {3: (4, 0)})
    alloc = policy.params_for(w + 1, history)
    assert alloc.capacity.tolist() == [pytest.approx(80.0 + 0.5 * 300)]


def test_the_refusal_guard_cuts_a_client_that_kept_sending_after_429s() -> None:
    w = FIRST + 3
    policy, history = learned(FixedModel(80.0, 0.5))
    # c3: 100 attempts, 90 refused (ignores the limit); c7: 10 attempts, 3 refused (retries).
    finish_window(history, w, {3: (100, 90), 7: (10, 3)})
    alloc = policy.params_for(w + 1, history)
    got = dict(zip(alloc.client.tolist(), alloc.capacity.tolist(), strict=True))
    assert got[3] == pytest.approx(0.5 * 10)  # half of the 10 it was let through
    assert got[7] == pytest.approx(80.0 + 0.5 * 300)
    # Nothing left of it: the guard still leaves one request.
    finish_window(history, w + 1, {3: (50, 50)})
    alloc = policy.params_for(w + 2, history)
    assert alloc.capacity.tolist() == [1.0]
    # The guard off.
    policy, history = learned(FixedModel(80.0, 0.5), model_guard_keep=1.0)
    finish_window(history, w, {3: (100, 90)})
    assert policy.params_for(w + 1, history).capacity.tolist() == [pytest.approx(230.0)]


def unhealthy(policy: LearnedModelPolicy) -> bool:
    return policy.unhealthy


def test_after_an_unhealthy_window_the_default_tightens_and_the_floor_lifts() -> None:
    w = FIRST + 3
    policy, history = learned(FixedModel(2.0, 0.01))
    finish_window(history, w, {3: (40, 0)}, latency_ms=500.0)  # p99 above the 200 ms SLO
    alloc = policy.params_for(w + 1, history)
    assert unhealthy(policy)
    assert alloc.default == policy.unhealthy_default
    assert alloc.capacity.tolist() == [pytest.approx(2.0 + 300 / 60)]  # not floored
    # Healthy again: the generous default and the floor are back.
    finish_window(history, w + 1, {3: (40, 0)}, latency_ms=50.0)
    alloc = policy.params_for(w + 2, history)
    assert not unhealthy(policy)
    assert alloc.default == policy.tier_default
    d_cap, _ = policy.tier_default
    assert alloc.capacity.tolist() == [pytest.approx(d_cap + 300 / 60)]
    # The mode off: an unhealthy window changes nothing.
    policy, history = learned(FixedModel(2.0, 0.01), model_unhealthy_mode=False)
    finish_window(history, w, {3: (40, 0)}, latency_ms=500.0)
    assert policy.params_for(w + 1, history).default == policy.tier_default


def test_model_directories_get_the_learned_policy() -> None:
    spec = resolve_policy("static")
    assert spec.name == "static"
    loaded: list[Path] = []

    class Trained(FixedModel):
        """What openclaw train writes: a manifest carrying the policy defaults."""

        calibration = type("Cal", (), {"details": {"policy_defaults": DEFAULTS}})()

    def loader(path: Path) -> BucketModel:
        loaded.append(path)
        return Trained(1.0, 1.0) if path.name == "tests" else FixedModel(1.0, 1.0)

    here = Path(__file__).parent
    spec = resolve_policy(f"{here}+gov", model_loader=loader)
    built = spec.build(PolicyConfig(), training_history().train)
    assert isinstance(built, Governed)
    assert isinstance(built.base, LearnedModelPolicy)
    assert loaded == [here]
    # A model without the trainer's defaults (a bare state_dict, a hook) is the bare hook.
    bare = resolve_policy(str(here.parent / "src"), model_loader=loader)
    plain = bare.build(PolicyConfig(), training_history().train)
    assert type(plain) is ModelPolicy


DEFAULTS: dict[str, Any] = {
    "tier_default": {"capacity": 33.0, "refill_rate": 0.002},
    "unhealthy_default": {"capacity": 11.0, "refill_rate": 0.002},
}


def test_a_model_carrying_policy_defaults_serves_them() -> None:
    class Carrying(FixedModel):
        def __init__(self, details: dict[str, Any]) -> None:
            super().__init__(2.0, 0.01)
            self.calibration = type("Cal", (), {"details": details})()

    policy, _ = learned(Carrying({"policy_defaults": DEFAULTS}))
    assert policy.tier_default == (33.0, 0.002)
    assert policy.unhealthy_default == (11.0, 0.002)
    assert manifest_defaults(FixedModel(1.0, 1.0)) is None  # no calibration: fitted instead
    with pytest.raises(ValueError, match="malformed"):
        learned(Carrying({"policy_defaults": {"tier_default": {}}}))
