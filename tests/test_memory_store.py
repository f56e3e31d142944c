"""The embedded store: bounded, idle buckets first out, safe across threads."""

from __future__ import annotations

import asyncio
import threading

from openclaw.clock import FakeClock
from openclaw.limiter import BucketParams, MemoryStore, TakeRequest


def test_the_bound_holds_under_a_million_distinct_clients_in_miniature() -> None:
    store = MemoryStore(max_buckets=100, clock=FakeClock())
    slow = BucketParams(5, 0.001)  # every bucket stays non-full: nothing expires
    for i in range(1000):
        assert store.take(f"client-{i}", slow).allowed
    assert len(store) <= 100
    assert store.evictions >= 900


def test_idle_buckets_are_evicted_before_active_ones() -> None:
    clock = FakeClock()
    store = MemoryStore(max_buckets=10, clock=clock)
    slow, fast = BucketParams(5, 0.001), BucketParams(1, 100.0)
    for i in range(5):  # active: drained, hours from full
        for _ in range(5):
            store.take(f"active-{i}", slow)
    for i in range(5):  # idle: full again 10 ms later
        store.take(f"idle-{i}", fast)
    clock.advance(1.0)
    for i in range(5):
        store.take(f"new-{i}", slow)
    assert len(store) <= 10
    for i in range(5):  # still drained: their state survived the evictions
        assert not store.take(f"active-{i}", slow).allowed


def test_past_the_expired_the_bucket_nearest_to_full_goes_first() -> None:
    store = MemoryStore(max_buckets=64, clock=FakeClock())
    params = BucketParams(10, 0.001)
    for i in range(63):
        store.take(f"drained-{i}", params, cost=10)
    store.take("nearly-full", params, cost=0.5)
    store.take("newcomer", params, cost=10)
    assert store.evictions == 1
    for i in range(63):  # denials insert nothing, so this evicts nothing more
        assert not store.take(f"drained-{i}", params).allowed  # no burst handed back
    assert store.take("nearly-full", params).remaining == 9.0  # forgotten: full again


def test_an_expired_bucket_decides_like_a_missing_one() -> None:
    clock = FakeClock()
    store = MemoryStore(max_buckets=64, clock=clock)
    fast = BucketParams(2, 100.0)
    for i in range(64):
        store.take(f"old-{i}", fast, cost=2)
    clock.advance(1.0)  # all full again: expired, still stored until space is needed
    assert store.take("old-0", fast).remaining == 1.0
    for i in range(64):
        store.take(f"new-{i}", fast)
    assert len(store) <= 64
    assert store.take("new-63", fast).remaining == 0.0  # the newest survived


def test_denials_do_not_create_buckets() -> None:
    store = MemoryStore(clock=FakeClock())
    assert not store.take("x", BucketParams(1, 1), cost=5).allowed
    assert len(store) == 0


def test_threads_hammering_one_key_admit_exactly_capacity() -> None:
    store = MemoryStore(clock=FakeClock())  # time stands still: no refill
    params = BucketParams(500, 1.0)
    admitted = [0] * 8

    def worker(i: int) -> None:
        for _ in range(1000):
            admitted[i] += store.take("shared", params).allowed

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 500


def test_async_api_and_batches() -> None:
    store = MemoryStore(clock=FakeClock())
    params = BucketParams(3, 0.001)

    async def scenario() -> tuple[int, int]:
        single = await asyncio.gather(*(store.atake("a", params) for _ in range(5)))
        many = await store.atake_many([TakeRequest.of("b", params)] * 5)
        await store.aclose()
        return sum(d.allowed for d in single), sum(d.allowed for d in many)

    assert asyncio.run(scenario()) == (3, 3)


def test_stored_buckets_cost_the_garbage_collector_nothing() -> None:
    """A full collection must not walk every bucket: at a million buckets that was a
    230 ms pause, ten times Envoy's whole rate-limit budget."""
    import gc

    store = MemoryStore(clock=FakeClock())
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        store.take(f"client-{i}", [BucketParams(10, 0.001), BucketParams(100, 1.0)])
    # A tuple is untracked once a collection finds everything in it untracked, so nested
    # tuples take a collection per level; a running service collects all the time.
    for _ in range(3):
        gc.collect()
    assert len(gc.get_objects()) - before < 100  # not one tracked object per bucket
