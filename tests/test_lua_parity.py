"""The Lua script is the twin of ``refill_and_take``: same random sequences, same explicit
times, identical decisions (exact float equality, not approximate). Also when a bucket was
written in the text format of before (an upgrade), and when one script call decides many
requests, some on the same key."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openclaw.clock import FakeClock
from openclaw.limiter import (
    BucketParams,
    BucketState,
    Decision,
    MemoryStore,
    TakeRequest,
    refill_and_take,
)
from openclaw.limiter.redis import RedisStore, bucket_key
from openclaw.settings import Settings
from openclaw.testing.redis import RedisServer

# Refill rates of at most 1/s and costs of at least 0.5 keep every key's Redis TTL (the time
# until full after a charge) at 0.5 s or more, far longer than an example takes in real time,
# so no key expires under the test's feet. Rate 0 (a quota, no TTL) is included.
params = st.builds(
    BucketParams,
    capacity=st.one_of(st.integers(1, 50).map(float), st.floats(0.5, 100.0)),
    refill_rate=st.one_of(st.just(0.0), st.floats(0.01, 1.0), st.sampled_from([0.1, 0.5, 1.0])),
)
limit_sets = st.lists(params, min_size=1, max_size=3)
operation = st.tuples(
    st.integers(0, 2),  # which key
    st.one_of(
        st.floats(0.0, 30.0), st.floats(-2.0, 0.0), st.just(0.0)
    ),  # time step; < 0: clock steps back
    st.one_of(st.integers(1, 5).map(float), st.floats(0.5, 60.0)),  # cost, at times above capacity
    st.integers(0, 1),  # which limit set: a key's limits may change between requests
    st.booleans(),  # first rewrite the key's value in the old text format, as before an upgrade
)


def old_text(states: tuple[BucketState, ...]) -> str:
    """A value as the script wrote it before values were binary: '%.17g' numbers."""
    return " ".join(f"{x:.17g}" for state in states for x in state)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    sets=st.tuples(limit_sets, limit_sets),
    ops=st.lists(operation, min_size=1, max_size=40),
    start=st.floats(0.0, 2e9),
)
def test_python_memory_and_lua_decide_identically(
    redis_server: RedisServer,
    sets: tuple[list[BucketParams], list[BucketParams]],
    ops: list[tuple[int, float, float, int, bool]],
    start: float,
) -> None:
    redis_store = RedisStore(redis_server.url, settings=Settings(redis_timeout_ms=2000))
    clock = FakeClock(start)
    memory = MemoryStore(clock=clock)
    states: dict[str, tuple[BucketState, ...]] = {}
    prefix = uuid.uuid4().hex
    now = start
    try:
        for key_index, step, cost, set_index, as_text in ops:
            key = f"{prefix}-{key_index}"
            limits = sets[set_index]
            now += step
            if as_text and key in states:
                with redis_server.client() as conn:
                    conn.set(bucket_key("oc", key), old_text(states[key]), keepttl=True, xx=True)
            new_states, expected = refill_and_take(states.get(key, ()), limits, now=now, cost=cost)
            if new_states is not None:
                states[key] = new_states

            from_lua = redis_store.take_at(key, limits, cost=cost, now=now)
            clock.now = now
            from_memory = memory.take(key, limits, cost=cost)

            assert isinstance(expected, Decision)
            assert from_lua == expected, (key, now, cost, limits)
            assert from_memory == expected, (key, now, cost, limits)
    finally:
        redis_store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sets=st.tuples(limit_sets, limit_sets),
    batch=st.lists(
        st.tuples(st.integers(0, 3), st.floats(0.5, 20.0), st.integers(0, 1)),
        min_size=1,
        max_size=150,  # past CALL_MAX: several script calls in one pipeline
    ),
    start=st.floats(0.0, 2e9),
    step=st.floats(0.0, 30.0),
)
def test_a_batch_decides_as_requests_one_after_another(
    redis_server: RedisServer,
    sets: tuple[list[BucketParams], list[BucketParams]],
    batch: list[tuple[int, float, int]],
    start: float,
    step: float,
) -> None:
    """The batch twice, the second time ``step`` later: the buckets the first one left refill."""
    redis_store = RedisStore(redis_server.url, settings=Settings(redis_timeout_ms=2000))
    prefix = uuid.uuid4().hex
    states: dict[str, tuple[BucketState, ...]] = {}
    try:
        for now in (start, start + step):
            requests: list[TakeRequest] = []
            expected: list[Decision] = []
            for key_index, cost, set_index in batch:
                key = f"{prefix}-{key_index}"
                limits = sets[set_index]
                requests.append(TakeRequest.of(key, limits, cost=cost))
                new_states, decision = refill_and_take(
                    states.get(key, ()), limits, now=now, cost=cost
                )
                if new_states is not None:
                    states[key] = new_states
                expected.append(decision)
            assert redis_store.take_many(requests, now=now) == expected
    finally:
        redis_store.close()
