"""The one contract every bucket store keeps: memory, Redis, and Redis Cluster.

Time-dependent checks decide at explicit times (a fake clock for memory, ``take_at`` for
Redis), so nothing sleeps and the expected numbers are exact.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from openclaw.clock import FakeClock
from openclaw.errors import InvalidParamsError
from openclaw.limiter import (
    NEVER,
    BucketParams,
    BucketStore,
    Decision,
    Limits,
    MemoryStore,
    TakeRequest,
    create_store,
)
from openclaw.limiter.redis import RedisStore, bucket_key
from openclaw.settings import Settings
from openclaw.testing.redis import RedisCluster, RedisServer

T0 = 1_000_000.0


@dataclass
class Harness:
    store: BucketStore
    clock: FakeClock
    #: Redis only: the milliseconds the server will keep a key (its own clock expires keys).
    pttl_ms: Callable[[str], int] | None = None

    def at(
        self, now: float, key: str, limits: Limits, cost: float = 1.0, ttl: float | None = None
    ) -> Decision:
        if isinstance(self.store, RedisStore):
            return self.store.take_at(key, limits, cost=cost, now=now, ttl=ttl)
        self.clock.now = now
        return self.store.take(key, limits, cost=cost, ttl=ttl)


@pytest.fixture(params=["memory", "redis", "cluster"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    clock = FakeClock(T0)
    pttl_ms: Callable[[str], int] | None = None
    if request.param == "memory":
        store: BucketStore = create_store(Settings(), clock=clock)
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store = create_store(Settings(store_url=server.url))

        def pttl_ms(key: str) -> int:
            return int(server.command("PTTL", bucket_key("oc", key)))
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        store = create_store(Settings(store_url=cluster.url))
        from redis.cluster import RedisCluster as ClusterClient

        client = ClusterClient(host="127.0.0.1", port=cluster.nodes[0].port)

        def pttl_ms(key: str) -> int:
            return int(client.pttl(bucket_key("oc", key)))

    yield Harness(store, clock, pttl_ms)
    store.close()
    if request.param == "cluster":
        client.close()


def test_factory_picks_the_backend_by_scheme(harness: Harness) -> None:
    assert isinstance(harness.store, BucketStore)
    assert harness.store.ping()


def test_a_burst_up_to_capacity_then_denial_with_retry_after(harness: Harness, key: str) -> None:
    params = BucketParams(5, 2.0)
    remaining = [harness.at(T0, key, params).remaining for _ in range(5)]
    assert remaining == [4.0, 3.0, 2.0, 1.0, 0.0]
    denied = harness.at(T0, key, params)
    assert denied == Decision(False, 0.0, 5.0, 0.5, 2.5)
    assert not denied.retry_never


def test_tokens_refill_continuously_up_to_capacity(harness: Harness, key: str) -> None:
    params = BucketParams(4, 2.0)
    for _ in range(4):
        assert harness.at(T0, key, params).allowed
    assert not harness.at(T0 + 0.25, key, params).allowed  # 0.5 tokens: not enough
    allowed = harness.at(T0 + 0.5, key, params)  # exactly one token
    assert allowed == Decision(True, 0.0, 4.0, 0.0, 2.0)
    # A long idle period refills to capacity and no further.
    assert harness.at(T0 + 3600, key, params).remaining == 3.0


def test_costs_other_than_one(harness: Harness, key: str) -> None:
    params = BucketParams(10, 1.0)
    assert harness.at(T0, key, params, cost=7).remaining == 3.0
    denied = harness.at(T0, key, params, cost=4.5)
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(1.5)
    assert harness.at(T0, key, params, cost=0).allowed  # a free peek never denies
    assert harness.at(T0 + 1.5, key, params, cost=4.5).remaining == 0.0


def test_a_cost_above_capacity_is_denied_for_ever_without_charging(
    harness: Harness, key: str
) -> None:
    params = BucketParams(3, 1.0)
    never = harness.at(T0, key, params, cost=4)
    assert not never.allowed
    assert never.retry_never
    assert never.retry_after == NEVER
    assert harness.at(T0, key, params).remaining == 2.0  # nothing was taken


def test_several_limits_are_charged_all_or_none(harness: Harness, key: str) -> None:
    sustained = BucketParams(4, 0.001)
    burst = BucketParams(2, 1.0)
    limits = [sustained, burst]
    assert harness.at(T0, key, limits, cost=2).allowed  # sustained 2 left, burst 0
    for _ in range(5):
        denied = harness.at(T0, key, limits)
        assert not denied.allowed
        assert denied.limit == 2.0  # the burst bucket is the one that says no
        assert denied.retry_after == pytest.approx(1.0)
    # Had the denials charged the sustained bucket, it could not pay 2 now.
    allowed = harness.at(T0 + 2, key, limits, cost=2)
    assert allowed.allowed
    assert (allowed.remaining, allowed.limit) == (0.0, 2.0)
    # The sustained bucket kept 0.002 of its 4 tokens: (4 - 0.002) / 0.001 s to refill.
    assert allowed.reset_after == pytest.approx(3998.0)


def test_a_bucket_that_does_not_refill_is_a_quota(harness: Harness, key: str) -> None:
    quota = BucketParams(2, 0.0)
    assert harness.at(T0, key, quota).allowed
    last = harness.at(T0, key, quota)
    assert last.allowed
    assert last.reset_after == NEVER
    denied = harness.at(T0 + 1e6, key, quota)
    assert not denied.allowed
    assert denied.retry_never


def test_a_ttl_bounds_how_long_a_key_is_kept(harness: Harness, key: str) -> None:
    """A key taken with a ttl is forgotten that long after its last write, though its buckets
    have not refilled (a window's keys: policy/learned.py); without one it is kept until
    they have, as it decides the same once forgotten."""
    slow = BucketParams(3, 0.001)  # 1,000 s a token
    for _ in range(3):
        assert harness.at(T0, key, slow, ttl=10.0).allowed
    assert harness.at(T0, key + "-kept", slow).allowed
    if harness.pttl_ms is not None:
        # Redis expires keys on its own clock, not take_at's: read what it was told.
        assert 0 < harness.pttl_ms(key) <= 10_000
        assert harness.pttl_ms(key + "-kept") > 990_000  # (3 - 2) / 0.001 s to refill
        return
    assert not harness.at(T0 + 9.0, key, slow, ttl=10.0).allowed  # drained within the ttl
    assert harness.at(T0 + 10.5, key, slow, ttl=10.0).remaining == 2.0  # forgotten: full
    assert harness.at(T0 + 10.5, key + "-kept", slow).remaining == pytest.approx(1.0105)


def test_a_ttl_must_be_positive_and_finite() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(InvalidParamsError, match="ttl"):
            TakeRequest.of("k", BucketParams(1, 1), ttl=bad)
    with pytest.raises(InvalidParamsError, match="ttl"):
        MemoryStore().take("k", BucketParams(1, 1), ttl=0.0)


def test_keys_are_independent(harness: Harness, key: str) -> None:
    params = BucketParams(1, 0.001)
    assert harness.at(T0, key + "a", params).allowed
    assert not harness.at(T0, key + "a", params).allowed
    assert harness.at(T0, key + "b", params).allowed


def test_reset_forgets_a_key(harness: Harness, key: str) -> None:
    params = BucketParams(1, 0.001)
    assert harness.at(T0, key, params).allowed
    assert not harness.at(T0, key, params).allowed
    harness.store.reset(key)
    assert harness.at(T0, key, params).allowed


def test_take_many_decides_in_request_order(harness: Harness, key: str) -> None:
    params = BucketParams(2, 0.001)
    requests = [TakeRequest.of(f"{key}-{i % 7}", params) for i in range(70)]
    decisions = harness.store.take_many(requests)
    for i, decision in enumerate(decisions):
        assert decision.allowed == (i < 14), i  # two per key, the first two rounds


def test_blocking_take_uses_the_store_clock(harness: Harness, key: str) -> None:
    params = BucketParams(3, 0.001)
    assert [harness.store.take(key, params).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]


def test_concurrent_async_takes_admit_exactly_capacity(harness: Harness, key: str) -> None:
    store, params = harness.store, BucketParams(10, 0.001)

    async def scenario() -> tuple[list[Decision], list[Decision]]:
        try:
            burst = await asyncio.gather(*(store.atake(key, params) for _ in range(60)))
            more = await store.atake_many([TakeRequest.of(key, params)] * 3)
        finally:
            await store.aclose()
        return burst, more

    burst, more = asyncio.run(scenario())
    assert sum(d.allowed for d in burst) == 10
    assert not any(d.allowed for d in more)


def test_async_takes_on_many_keys(harness: Harness, key: str) -> None:
    store, params = harness.store, BucketParams(3, 0.001)

    async def scenario() -> list[Decision]:
        try:
            return await asyncio.gather(
                *(store.atake(f"{key}-{i % 20}", params) for i in range(100))
            )
        finally:
            await store.aclose()

    assert sum(d.allowed for d in asyncio.run(scenario())) == 60


@pytest.mark.parametrize(
    ("limits", "cost"),
    [
        (BucketParams(1, 1), -1),
        (BucketParams(1, 1), math.nan),
        (BucketParams(1, 1), math.inf),
        ([], 1),
    ],
)
def test_bad_requests_raise_a_clear_error(harness: Harness, limits: Limits, cost: float) -> None:
    with pytest.raises(InvalidParamsError):
        harness.store.take("x", limits, cost=cost)


@pytest.mark.parametrize(("capacity", "rate"), [(-1, 1), (1, -0.5), (math.inf, 1), (1, math.nan)])
def test_bad_params_raise_a_clear_error(capacity: float, rate: float) -> None:
    with pytest.raises(InvalidParamsError, match=r"capacity|refill_rate"):
        BucketParams(capacity, rate)


def test_params_of_the_wrong_type_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        BucketParams("5", 1)  # type: ignore[arg-type]


def test_memory_store_is_the_embedded_default() -> None:
    store = create_store(Settings())
    assert isinstance(store, MemoryStore)
    assert store.max_buckets == 1_000_000
