"""What only the Redis store has: TTLs, hash tags, script reloads, coalesced round trips."""

from __future__ import annotations

import asyncio

import pytest

from openclaw.errors import ConfigError
from openclaw.limiter import BucketParams, TakeRequest, create_store
from openclaw.limiter.redis import RedisStore, bucket_key
from openclaw.settings import Settings
from openclaw.testing.redis import RedisCluster, RedisServer


def script_calls(server: RedisServer) -> int:
    """Script runs the server completed (EVALSHA, and EVAL after a NOSCRIPT)."""
    with server.client() as client:
        stats = client.info("commandstats")
    return sum(
        stats[name]["calls"] - stats[name]["failed_calls"]
        for name in ("cmdstat_eval", "cmdstat_evalsha")
        if name in stats
    )


def test_a_key_lives_until_its_buckets_are_full(redis_server: RedisServer, key: str) -> None:
    store = RedisStore(redis_server.url)
    store.take(key, BucketParams(10, 2.0), cost=4)  # 4 tokens short at 2/s: full in 2 s
    ttl = int(redis_server.command("PTTL", bucket_key("oc", key)))
    assert 1900 < ttl <= 2000
    store.take(key + "q", BucketParams(3, 0.0))  # a quota never refills: no expiry
    assert redis_server.command("PTTL", bucket_key("oc", key + "q")) == "-1"
    store.close()


def test_a_denial_writes_nothing(redis_server: RedisServer, key: str) -> None:
    store = RedisStore(redis_server.url)
    assert not store.take(key, BucketParams(1, 1.0), cost=2).allowed
    assert redis_server.command("EXISTS", bucket_key("oc", key)) == "0"
    store.close()


def test_keys_carry_a_hash_tag(redis_cluster: RedisCluster) -> None:
    node = redis_cluster.nodes[0]
    tagged = node.command("CLUSTER", "KEYSLOT", bucket_key("oc", "client-7"))
    assert tagged == node.command("CLUSTER", "KEYSLOT", "client-7")


def test_noscript_after_a_script_flush_is_handled(redis_server: RedisServer, key: str) -> None:
    store = RedisStore(redis_server.url)
    assert store.take(key, BucketParams(2, 0.001)).allowed
    redis_server.command("SCRIPT", "FLUSH")
    assert store.take(key, BucketParams(2, 0.001)).allowed
    redis_server.command("SCRIPT", "FLUSH")
    batch = store.take_many([TakeRequest.of(f"{key}-{i}", BucketParams(1, 1)) for i in range(200)])
    assert all(d.allowed for d in batch)
    assert not store.take(key, BucketParams(2, 0.001)).allowed
    assert store.failures == 0
    store.close()


def test_noscript_on_every_cluster_node(redis_cluster: RedisCluster, key: str) -> None:
    store = create_store(Settings(store_url=redis_cluster.url))
    for node in redis_cluster.nodes:
        node.command("SCRIPT", "FLUSH")
    keys = [f"{key}-{i}" for i in range(30)]  # spread over every node
    assert all(
        d.allowed
        for d in store.take_many([TakeRequest.of(k, BucketParams(1, 0.001)) for k in keys])
    )
    assert not any(store.take(k, BucketParams(1, 0.001)).allowed for k in keys)
    store.close()


def test_concurrent_decisions_share_round_trips(own_redis: RedisServer) -> None:
    store = RedisStore(own_redis.url)
    params = BucketParams(5, 1.0)

    async def scenario() -> int:
        try:
            decisions = await asyncio.gather(*(store.atake(f"c{i}", params) for i in range(500)))
        finally:
            await store.aclose()
        return sum(d.allowed for d in decisions)

    before = script_calls(own_redis)
    assert asyncio.run(scenario()) == 500
    calls = script_calls(own_redis) - before
    # 500 decisions in calls of up to 64: eight script calls, not five hundred.
    assert 1 <= calls <= 16, calls


def test_a_batch_takes_one_pipelined_round_trip(own_redis: RedisServer) -> None:
    store = RedisStore(own_redis.url)
    before = script_calls(own_redis)
    store.take_many([TakeRequest.of(f"b{i}", BucketParams(1, 1)) for i in range(128)])
    # 128 decisions, 64 per script call; on a fresh server both NOSCRIPT, then both EVAL.
    assert script_calls(own_redis) - before == 2
    store.take_many([TakeRequest.of(f"b{i}", BucketParams(1, 1)) for i in range(128)])
    assert script_calls(own_redis) - before == 4
    store.close()


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown store URL scheme"):
        create_store(Settings(store_url="memcached://x"))
