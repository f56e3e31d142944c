"""Several processes hammer one key through Redis: admitted never exceeds what the bucket
allows, ``capacity + refill_rate * elapsed``, with elapsed measured on Redis's own clock."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest

from openclaw.limiter import BucketParams
from openclaw.limiter.redis import RedisStore
from openclaw.settings import Settings
from openclaw.testing.redis import RedisCluster, RedisServer

PARAMS = BucketParams(25, 40.0)
RUN_S = 1.5
PROCESSES = 4
Result = tuple[int, int]


def hammer(url: str, key: str, use_async: bool, start: Barrier, results: Queue[Result]) -> None:
    """Puts (admitted, attempts) over RUN_S seconds. Runs in a child process.

    Every child connects, then waits for the others, so they really run at the same time
    however long the interpreter takes to start on a loaded machine."""
    store = RedisStore(url, settings=Settings(redis_timeout_ms=2000))
    store.ping()
    start.wait(timeout=120)
    deadline = time.time() + RUN_S
    results.put(_hammer(store, key, use_async, deadline))


def _hammer(store: RedisStore, key: str, use_async: bool, deadline: float) -> Result:
    admitted = attempts = 0
    if not use_async:
        while time.time() < deadline:
            admitted += store.take(key, PARAMS).allowed
            attempts += 1
        store.close()
        return admitted, attempts

    async def task() -> Result:
        ok = n = 0
        while time.time() < deadline:
            ok += (await store.atake(key, PARAMS)).allowed
            n += 1
        return ok, n

    async def many() -> list[Result]:
        try:
            return await asyncio.gather(*(task() for _ in range(16)))
        finally:
            await store.aclose()

    results = asyncio.run(many())
    return sum(r[0] for r in results), sum(r[1] for r in results)


def redis_seconds(server: RedisServer) -> float:
    with server.client() as client:
        seconds, micros = client.time()
    return seconds + micros / 1e6


@pytest.mark.parametrize("target", ["redis", "cluster"])
def test_processes_never_admit_more_than_the_bucket_allows(
    request: pytest.FixtureRequest, target: str
) -> None:
    if target == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url, clock_node = server.url, server
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        url, clock_node = cluster.url, cluster.nodes[0]
    key = f"hammered-{target}-{time.time_ns()}"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    queue: Queue[Result] = ctx.Queue()
    children = [
        ctx.Process(target=hammer, args=(url, key, i % 2 == 1, start, queue))
        for i in range(PROCESSES)
    ]
    started = redis_seconds(clock_node)  # before any child can touch the key
    for child in children:
        child.start()
    results = [queue.get(timeout=180) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    elapsed = redis_seconds(clock_node) - started
    admitted = sum(r[0] for r in results)
    attempts = sum(r[1] for r in results)
    bound = PARAMS.capacity + PARAMS.refill_rate * elapsed
    assert admitted <= bound, (admitted, bound, elapsed)
    # The test means something only if the key was really contended and drained.
    assert attempts > 3 * admitted, (attempts, admitted)
    assert admitted > PARAMS.capacity + PARAMS.refill_rate * RUN_S * 0.5
