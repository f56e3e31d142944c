"""The pure arithmetic, with no store and no clock: data in, data out."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openclaw.errors import InvalidParamsError
from openclaw.limiter import (
    NEVER,
    BucketParams,
    BucketState,
    Decision,
    refill,
    refill_and_take,
    time_to_full,
)

params = st.builds(
    BucketParams, capacity=st.floats(0.5, 1000.0), refill_rate=st.floats(0.001, 100.0)
)
steps = st.lists(st.tuples(st.floats(0.0, 10.0), st.floats(0.0, 20.0)), min_size=1, max_size=60)


def test_a_missing_bucket_is_full() -> None:
    assert refill(None, BucketParams(7, 1), 123.0) == 7.0


def test_refill_is_linear_and_capped() -> None:
    p = BucketParams(10, 2)
    assert refill((1.0, 100.0), p, 102.0) == 5.0
    assert refill((1.0, 100.0), p, 1000.0) == 10.0


def test_a_clock_that_steps_back_refills_nothing() -> None:
    assert refill((1.0, 100.0), BucketParams(10, 2), 90.0) == 1.0


def test_time_to_full() -> None:
    assert time_to_full(4.0, BucketParams(10, 2)) == 3.0
    assert time_to_full(10.0, BucketParams(10, 0)) == 0.0
    assert time_to_full(9.0, BucketParams(10, 0)) == NEVER


def test_denial_writes_nothing_and_says_why() -> None:
    p = BucketParams(2, 1)
    states, decision = refill_and_take([(0.5, 0.0)], [p], now=0.0, cost=1.0)
    assert states is None
    assert decision == Decision(False, 0.5, 2.0, 0.5, 1.5)


def test_cost_above_capacity_is_never() -> None:
    states, decision = refill_and_take([], [BucketParams(2, 1)], now=0.0, cost=3.0)
    assert states is None
    assert decision.retry_never
    assert not decision.allowed


def test_no_limits_is_an_error() -> None:
    with pytest.raises(InvalidParamsError):
        refill_and_take([], [], now=0.0, cost=1.0)


def test_decision_and_params_are_immutable() -> None:
    decision = Decision(True, 1.0, 2.0, 0.0, 1.0)
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]
    with pytest.raises(AttributeError):
        BucketParams(1, 1).capacity = 5  # type: ignore[misc]
    assert decision == Decision(True, 1.0, 2.0, 0.0, 1.0)
    assert len({decision, Decision(True, 1.0, 2.0, 0.0, 1.0)}) == 1
    assert "retry_after=0.0" in repr(decision)


@given(p=params, steps=steps, state_tokens=st.floats(0.0, 1.0))
def test_one_limit_decides_like_the_same_limit_twice(
    p: BucketParams, steps: list[tuple[float, float]], state_tokens: float
) -> None:
    """The single-limit fast path and the general loop are the same arithmetic."""
    one: tuple[BucketState, ...] = ((p.capacity * state_tokens, 0.0),)
    two: tuple[BucketState, ...] = one * 2
    now = 0.0
    for step, cost in steps:
        now += step
        new_one, d_one = refill_and_take(one, [p], now=now, cost=cost)
        new_two, d_two = refill_and_take(two, [p, p], now=now, cost=cost)
        assert d_one == d_two
        assert (new_one is None) == (new_two is None)
        if new_one is not None and new_two is not None:
            assert new_two == new_one * 2
            one, two = new_one, new_two


@given(p=params, steps=steps)
def test_admitted_never_exceeds_capacity_plus_refill(
    p: BucketParams, steps: list[tuple[float, float]]
) -> None:
    states: tuple[BucketState, ...] = ()
    now = admitted = 0.0
    for step, cost in steps:
        now += step
        new, decision = refill_and_take(states, [p], now=now, cost=cost)
        if new is not None:
            states = new
            admitted += cost
        assert decision.remaining >= -1e-9
    assert admitted <= p.capacity + p.refill_rate * now + 1e-6 * max(1.0, admitted)


@given(p=params, drain=st.floats(0.0, 1.0), cost=st.floats(0.01, 1000.0))
def test_retry_after_is_when_the_request_fits(p: BucketParams, drain: float, cost: float) -> None:
    state = ((p.capacity * drain, 0.0),)
    _, decision = refill_and_take(state, [p], now=0.0, cost=cost)
    if decision.allowed:
        assert decision.retry_after == 0.0
    elif cost > p.capacity:
        assert decision.retry_never
    else:
        later = decision.retry_after * (1 + 1e-9) + 1e-12
        _, retry = refill_and_take(state, [p], now=later, cost=cost)
        assert retry.allowed
        assert not math.isinf(decision.retry_after)
