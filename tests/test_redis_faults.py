"""A real redis-server killed mid-run, frozen, or absent: each failure mode, then recovery.

The store's breaker runs on an injected fake clock, so "after the retry interval" needs no
sleep; the server is really killed (SIGKILL), stopped (SIGSTOP) and restarted on its port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openclaw.clock import FakeClock
from openclaw.limiter import BucketParams, Decision
from openclaw.limiter.redis import RedisStore
from openclaw.settings import FailureMode, Settings
from openclaw.testing.redis import RedisServer, free_port

RETRY_S = 5.0
SLOW = BucketParams(3, 0.001)


def make_store(url: str, mode: FailureMode, clock: FakeClock) -> RedisStore:
    settings = Settings(
        failure_mode=mode,
        redis_retry_interval_s=RETRY_S,
        redis_timeout_ms=100,
        redis_connect_timeout_ms=100,
    )
    return RedisStore(url, settings=settings, clock=clock)


def up(store: RedisStore) -> bool:
    """Read through a call: mypy would otherwise narrow the property across assertions."""
    return store.available


def allowed(decisions: list[Decision]) -> list[bool]:
    return [d.allowed for d in decisions]


EXPECTED_DURING_OUTAGE = {
    "open": [True] * 6,  # allow, as Envoy does
    "closed": [False] * 6,  # deny
    "local": [True, True, True, False, False, False],  # a fresh in-process bucket of 3
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.mark.parametrize("mode", ["open", "closed", "local"])
def test_redis_killed_mid_run_then_back(
    own_redis: RedisServer, clock: FakeClock, mode: FailureMode
) -> None:
    store = make_store(own_redis.url, mode, clock)
    run = [store.take("k", SLOW) for _ in range(4)]
    assert allowed(run) == [True, True, True, False]
    assert up(store)

    own_redis.kill()
    during = [store.take("k", SLOW) for _ in range(6)]
    assert allowed(during) == EXPECTED_DURING_OUTAGE[mode]
    if mode == "closed":
        assert all(d.retry_after == RETRY_S for d in during)
    assert not up(store)
    assert not store.ping()
    # One failed round trip opened the breaker; the other decisions did not wait on Redis.
    assert store.failures == 1
    assert store.fallback_decisions == 6
    assert store.last_error is not None
    assert "password" not in store.last_error

    async def outage_async() -> Decision:
        return await store.atake("k", SLOW)

    assert asyncio.run(outage_async()).allowed == (mode == "open")

    own_redis.start()  # empty, and with no script cached: the next call meets NOSCRIPT
    clock.advance(RETRY_S / 2)
    assert allowed([store.take("fresh", SLOW)]) == [mode != "closed"]  # still by failure mode
    assert store.failures == 1

    clock.advance(RETRY_S)
    after = [store.take("fresh", SLOW) for _ in range(4)]
    assert allowed(after) == [True, True, True, False]
    assert after[0].remaining == pytest.approx(2.0, abs=0.01)  # Redis state, not the fallback's
    assert up(store)
    assert store.ping()
    assert store.failures == 1
    store.close()


def test_a_frozen_server_times_out_in_milliseconds(
    own_redis: RedisServer, clock: FakeClock
) -> None:
    store = make_store(own_redis.url, "closed", clock)
    assert store.take("k", SLOW).allowed
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        denied = store.take("k", SLOW)
        assert not denied.allowed
        assert store.last_error is not None
        assert "Timeout" in store.last_error
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    clock.advance(RETRY_S)
    assert store.take("k", SLOW).allowed
    assert up(store)
    store.close()


@pytest.fixture
def absent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), workdir=tmp_path)  # not started
    yield server
    server.kill()


def test_redis_down_at_start_up_then_up(absent_redis: RedisServer, clock: FakeClock) -> None:
    store = make_store(absent_redis.url, "local", clock)
    assert allowed([store.take("k", SLOW) for _ in range(4)]) == [True, True, True, False]
    assert not up(store)
    absent_redis.start()
    clock.advance(RETRY_S)
    assert store.take("k", SLOW).remaining == pytest.approx(2.0, abs=0.01)
    assert up(store)
    store.close()


def test_async_decisions_recover_too(own_redis: RedisServer, clock: FakeClock) -> None:
    store = make_store(own_redis.url, "closed", clock)

    async def burst(key: str) -> list[bool]:
        return allowed(await asyncio.gather(*(store.atake(key, SLOW) for _ in range(5))))

    async def scenario() -> tuple[list[bool], list[bool], list[bool]]:
        before = await burst("a")
        own_redis.kill()
        during = await burst("b")
        own_redis.start()
        clock.advance(RETRY_S)
        after = await burst("c")
        await store.aclose()
        return before, during, after

    before, during, after = asyncio.run(scenario())
    assert before == [True, True, True, False, False]
    assert during == [False] * 5
    assert after == [True, True, True, False, False]


def test_async_decisions_on_a_frozen_server_time_out_then_recover(
    own_redis: RedisServer, clock: FakeClock
) -> None:
    """The asyncio path (one held connection, a direct write, coalesced round trips) keeps
    the millisecond timeout: a stopped server costs one timeout, not a hang, and the held
    connection is replaced once the server answers again."""
    store = make_store(own_redis.url, "closed", clock)
    assert own_redis.proc is not None
    pid = own_redis.proc.pid

    async def burst(key: str) -> list[bool]:
        return allowed(await asyncio.gather(*(store.atake(key, SLOW) for _ in range(5))))

    async def scenario() -> tuple[list[bool], list[bool], float, list[bool]]:
        before = await burst("a")
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            during = await burst("b")
            took = time.perf_counter() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        clock.advance(RETRY_S)
        after = await burst("c")
        await store.aclose()
        return before, during, took, after

    before, during, took, after = asyncio.run(scenario())
    assert before == [True, True, True, False, False]
    assert during == [False] * 5  # closed: denied while frozen
    assert took < 2.0  # one 100 ms timeout (generous for a loaded machine), not a hang
    assert store.last_error is not None
    assert "Timeout" in store.last_error
    assert after == [True, True, True, False, False]
