"""What only the Redis store has: TTLs, hash tags, script reloads, coalesced round trips."""

from __future__ import annotations

import asyncio
import struct

import pytest

from openclaw.errors import ConfigError
from openclaw.limiter import BucketParams, BucketState, TakeRequest, create_store, refill_and_take
from openclaw.limiter.redis import RedisStore, bucket_key, encode_call
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


def raw_value(server: RedisServer, key: str) -> bytes | None:
    with server.client() as client:
        value = client.get(bucket_key("oc", key))
    assert value is None or isinstance(value, bytes)
    return value


def test_a_value_is_a_format_byte_then_exact_doubles(redis_server: RedisServer, key: str) -> None:
    store = RedisStore(redis_server.url)
    now = 1e9 + 0.1  # 0.1 has no short decimal form: text would need all 17 digits
    limits = (BucketParams(10, 0.3), BucketParams(7, 1 / 3))
    decision = store.take_at(key, limits, cost=2.5, now=now)
    assert decision.allowed
    assert raw_value(redis_server, key) == b"\x01" + struct.pack("<4d", 7.5, now, 4.5, now)
    store.close()


def old_text(states: tuple[BucketState, ...]) -> str:
    """A value as the script wrote it before values were binary: '%.17g' numbers."""
    return " ".join(f"{x:.17g}" for state in states for x in state)


@pytest.mark.parametrize(
    ("stored", "limits"),
    [
        (((2.25, 100.5),), (BucketParams(10, 0.7),)),
        (((2.25, 100.5), (0.1, 99.9), (6.0, 101.0)), (BucketParams(10, 0.7),)),
        (
            ((2.25, 100.5), (0.1, 99.9), (6.0, 101.0)),
            (BucketParams(10, 0.7), BucketParams(3, 0.01), BucketParams(8, 0.0)),
        ),
        # fewer limits stored than asked: the missing ones are full
        (((2.25, 100.5),), (BucketParams(10, 0.7), BucketParams(3, 0.01))),
    ],
)
def test_a_bucket_of_the_old_text_format_is_read_after_an_upgrade(
    redis_server: RedisServer,
    key: str,
    stored: tuple[BucketState, ...],
    limits: tuple[BucketParams, ...],
) -> None:
    redis_server.command("SET", bucket_key("oc", key), old_text(stored))
    store = RedisStore(redis_server.url)
    states: tuple[BucketState, ...] = stored
    for now, cost in ((102.0, 1.0), (102.5, 3.0), (110.0, 0.5)):
        new_states, expected = refill_and_take(states, limits, now=now, cost=cost)
        assert store.take_at(key, limits, cost=cost, now=now) == expected
        states = new_states or states
    store.close()


def test_a_bucket_that_takes_ages_to_refill_is_kept_without_expiry(
    redis_server: RedisServer, key: str
) -> None:
    # Full again in 1e17 s: a PX in milliseconds would not fit Redis's integers (the script
    # used to fail here). Kept for good, like a quota.
    store = RedisStore(redis_server.url)
    params = BucketParams(10, 1e-17)
    assert store.take(key, params).reset_after == 1e17
    assert redis_server.command("PTTL", bucket_key("oc", key)) == "-1"
    assert store.take(key, params).remaining == 8.0
    store.close()


def test_a_url_asking_for_decoded_replies_is_a_config_error(redis_server: RedisServer) -> None:
    with pytest.raises(ConfigError, match="decode_responses"):
        RedisStore(redis_server.url + "?decode_responses=True")


def test_the_asyncio_client_packs_commands_as_redis_py_does() -> None:
    from redis.asyncio.connection import Connection

    from openclaw.limiter.redis import SCRIPT_SHA, _hiredis_packing

    requests = [TakeRequest.of(f"c-{i}-é", BucketParams(5, 0.5 * i), cost=i) for i in range(70)]
    args = ("EVALSHA", SCRIPT_SHA, *encode_call(requests, "oc", 12.5))
    fast = _hiredis_packing(Connection)()
    assert type(fast).__name__ == "HiredisPackingConnection"
    assert b"".join(fast.pack_command(*args)) == b"".join(Connection().pack_command(*args))
    assert b"".join(fast.pack_command("CLIENT SETNAME", "x")) == b"".join(
        Connection().pack_command("CLIENT SETNAME", "x")
    )


def test_async_batches_larger_than_a_round_trip_keep_their_order(own_redis: RedisServer) -> None:
    store = RedisStore(own_redis.url, settings=Settings(redis_max_batch=50))
    params = BucketParams(3, 0.001)

    async def scenario() -> tuple[list[bool], list[float], bool]:
        try:
            # 3 takes per key, keys interleaved; and single atakes racing the batch
            batch = [TakeRequest.of(f"o{i % 40}", params) for i in range(120)]
            many = asyncio.ensure_future(store.atake_many(batch))
            others = await asyncio.gather(*(store.atake(f"s{i}", params) for i in range(30)))
            decisions = await many
        finally:
            await store.aclose()
        return (
            [d.allowed for d in decisions],
            [d.remaining for d in decisions],
            all(d.allowed for d in others),
        )

    before = script_calls(own_redis)
    allowed, remaining, singles_allowed = asyncio.run(scenario())
    assert allowed == [True] * 120  # capacity 3, three takes a key
    assert [round(r) for r in remaining] == [2] * 40 + [1] * 40 + [0] * 40
    assert singles_allowed
    # 150 decisions in round trips of at most 50: calls of at most 64 never span two
    assert 3 <= script_calls(own_redis) - before <= 8
