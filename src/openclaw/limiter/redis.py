"""Bucket state in Redis or Redis Cluster: one packaged Lua script, one round trip.

* The read-modify-write is ``lua/take.lua``, run by ``EVALSHA``; after a restart (or on a
  cluster node that never saw it) the ``NOSCRIPT`` reply is answered with one ``EVAL`` that
  also reloads the script there.
* Time is Redis ``TIME``, so replicas and clients with skewed clocks agree on every bucket.
* Keys are ``{prefix}:{<client key>}``: the hash tag keeps every bucket of a key in one slot,
  so the same script runs unchanged on a cluster.
* ``atake`` callers in one event loop are coalesced: while one round trip is in flight the
  next requests queue, and go together in the next pipeline, several decisions per script
  call (grouped by cluster slot). ``take_many`` does the same for a batch in blocking code.
* Millisecond timeouts and no client-side retries: a decision that cannot reach Redis in time
  follows ``failure_mode`` (open, closed or local) and Redis is left alone for
  ``redis_retry_interval_s`` before it is tried again, so recovery needs no restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from openclaw.clock import Clock, monotonic
from openclaw.errors import ConfigError, StoreError
from openclaw.limiter.base import Limits, TakeRequest
from openclaw.limiter.core import Decision
from openclaw.limiter.memory import MemoryStore
from openclaw.settings import FailureMode, Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

log = logging.getLogger(__name__)

#: Most decisions one script call carries. Redis runs a script to completion, so this bounds
#: how long one call holds the server (about 2 us a decision).
CALL_MAX: Final = 64

SCRIPT: Final = resources.files("openclaw.limiter").joinpath("lua/take.lua").read_text("utf-8")
SCRIPT_SHA: Final = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

CLUSTER_SCHEMES: Final = frozenset({"redis+cluster", "rediss+cluster"})


def bucket_key(prefix: str, key: str) -> str:
    """The Redis key of a client key; the braces are the cluster hash tag."""
    return f"{prefix}:{{{key}}}"


def encode_call(requests: Sequence[TakeRequest], prefix: str, now: float | None) -> list[Any]:
    """The arguments after the sha of one script call deciding ``requests``.

    Every number goes in one space-separated string: packing an argument is pure Python in
    redis-py's asyncio client, and five of them per decision cost more than the decision.
    Floats are written with ``repr``, which the script's ``tonumber`` reads back exactly.
    """
    keys = [bucket_key(prefix, req.key) for req in requests]
    numbers: list[str] = []
    for req in requests:
        numbers.append(repr(req.cost))
        numbers.append(str(len(req.limits)))
        for params in req.limits:
            numbers.append(repr(params.capacity))
            numbers.append(repr(params.refill_rate))
    return [len(keys), *keys, "" if now is None else repr(now), " ".join(numbers)]


def _decode(reply: bytes) -> Decision:
    allowed, remaining, limit, retry_after, reset_after = reply.split()
    return Decision(
        allowed == b"1", float(remaining), float(limit), float(retry_after), float(reset_after)
    )


def _pipeline(client: Any, command: str, script: str, calls: list[list[Any]]) -> Any:
    """One round trip of script calls (a pipeline of one for a single call). ``EVAL`` runs a
    call and also caches the script on whichever node it reached."""
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.execute_command(command, script, *call)
    return pipe


def _merge(replies: list[Any], positions: list[int], retried: list[Any]) -> None:
    for position, reply in zip(positions, retried, strict=True):
        replies[position] = reply


class RedisStore:
    """A :class:`~openclaw.limiter.base.BucketStore` on Redis or Redis Cluster.

    ``url`` is ``redis://``, ``rediss://`` or ``unix://`` for one server, and
    ``redis+cluster://host:port`` (any node) for a cluster.
    """

    def __init__(
        self,
        url: str,
        *,
        settings: Settings | None = None,
        clock: Clock = monotonic,
    ) -> None:
        import redis.exceptions as rexc

        settings = settings or Settings()
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ConfigError(f"not a Redis URL: {url!r}")
        self._cluster = scheme in CLUSTER_SCHEMES
        self._url = f"{scheme.removesuffix('+cluster')}://{rest}"
        self._settings = settings
        self._prefix = settings.redis_key_prefix
        self._mode: FailureMode = settings.failure_mode
        self._retry_interval = settings.redis_retry_interval_s
        self._clock = clock
        self._local = MemoryStore(max_buckets=settings.memory_max_buckets, clock=clock)
        self._sync: Any = None
        self._async: AsyncRedis | AsyncRedisCluster | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[TakeRequest, asyncio.Future[Decision]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._unavailable: tuple[type[BaseException], ...] = (
            rexc.ConnectionError,  # includes BusyLoadingError
            rexc.TimeoutError,
            rexc.ClusterDownError,
            rexc.ClusterError,
            rexc.RedisClusterException,
            rexc.SlotNotCoveredError,
            rexc.TryAgainError,
            rexc.ReadOnlyError,  # a failover is under way
            rexc.MasterDownError,
            OSError,
        )
        self._noscript: type[BaseException] = rexc.NoScriptError
        self._redis_error: type[BaseException] = rexc.RedisError
        #: Round trips that failed, and decisions made by failure_mode instead of Redis.
        self.failures = 0
        self.fallback_decisions = 0
        self.last_error: str | None = None

    # -- public API -------------------------------------------------------------------

    @property
    def failure_mode(self) -> FailureMode:
        return self._mode

    @property
    def available(self) -> bool:
        """False while decisions follow the failure mode (until the next retry succeeds)."""
        return self._down_until == 0.0

    def take(self, key: str, limits: Limits, *, cost: float = 1.0) -> Decision:
        return self.take_many([TakeRequest.of(key, limits, cost=cost)])[0]

    def take_at(self, key: str, limits: Limits, *, cost: float = 1.0, now: float) -> Decision:
        """Decide at an explicit time instead of Redis ``TIME``: for tests only."""
        return self.take_many([TakeRequest.of(key, limits, cost=cost)], now=now)[0]

    def take_many(
        self, requests: Sequence[TakeRequest], *, now: float | None = None
    ) -> list[Decision]:
        if not requests:
            return []
        if self._clock() < self._down_until:
            return self._fallback(requests)
        try:
            replies = self._run_sync(requests, now)
        except self._unavailable as exc:
            self._mark_down(exc)
            return self._fallback(requests)
        self._mark_up()
        return [_decode(r) for r in replies]

    async def atake(self, key: str, limits: Limits, *, cost: float = 1.0) -> Decision:
        (future,) = self._enqueue([TakeRequest.of(key, limits, cost=cost)])
        return await future

    async def atake_many(self, requests: Sequence[TakeRequest]) -> list[Decision]:
        # Through the same queue as atake: concurrent batches (gRPC requests with several
        # descriptors, HTTP batch calls) share round trips too.
        return list(await asyncio.gather(*self._enqueue(requests)))

    def _enqueue(self, requests: Sequence[TakeRequest]) -> list[asyncio.Future[Decision]]:
        loop = asyncio.get_running_loop()
        self._bind_loop(loop)
        futures: list[asyncio.Future[Decision]] = []
        for request in requests:
            future: asyncio.Future[Decision] = loop.create_future()
            self._pending.append((request, future))
            futures.append(future)
        if self._drainer is None and futures:
            # Starts after this coroutine yields, so every request made ready in the same
            # loop iteration joins the first round trip.
            self._drainer = loop.create_task(self._drain())
        return futures

    def reset(self, key: str) -> None:
        self._local.reset(key)
        try:
            self._sync_client().delete(bucket_key(self._prefix, key))
        except self._unavailable as exc:
            self._mark_down(exc)
            raise StoreError(f"could not reset {key!r}: Redis is unavailable") from exc

    def ping(self) -> bool:
        if self._clock() < self._down_until:
            return False
        try:
            ok = bool(self._sync_client().ping())
        except self._unavailable as exc:
            self._mark_down(exc)
            return False
        self._mark_up()
        return ok

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        if self._drainer is not None:
            await asyncio.gather(self._drainer, return_exceptions=True)
        if self._async is not None:
            from redis.asyncio.cluster import RedisCluster as ACluster

            if isinstance(self._async, ACluster):
                # redis-py's asyncio cluster client recycles connections in background tasks
                # (ClusterNode.release) that can outlive aclose() and leak their sockets when
                # the loop ends. Let them finish, close, then disconnect every node again.
                nodes = list(self._async.get_nodes())
                tasks = [t for node in nodes for t in getattr(node, "_background_tasks", ())]
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._async.aclose()
                await asyncio.sleep(0)
                await asyncio.gather(*(n.disconnect() for n in nodes), return_exceptions=True)
            else:
                await self._async.aclose()
            self._async = None
        self.close()

    # -- failure mode ---------------------------------------------------------------

    def _mark_down(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._down_until == 0.0:
            # The URL may carry a password: name the error, never the URL.
            log.warning("Redis unavailable (%s); deciding %s", self.last_error, self._mode)
        self._down_until = self._clock() + self._retry_interval

    def _mark_up(self) -> None:
        if self._down_until != 0.0:
            self._down_until = 0.0
            log.warning("Redis is back; deciding from Redis again")

    def _fallback(self, requests: Sequence[TakeRequest]) -> list[Decision]:
        self.fallback_decisions += len(requests)
        if self._mode == "local":
            return self._local.take_many(requests)
        out: list[Decision] = []
        wait = max(self._down_until - self._clock(), 0.0)
        for req in requests:
            capacity = min(p.capacity for p in req.limits)
            if self._mode == "open":
                out.append(Decision(True, max(capacity - req.cost, 0.0), capacity, 0.0, 0.0))
            else:
                out.append(Decision(False, 0.0, capacity, wait, wait))
        return out

    # -- blocking client ------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {
            "socket_timeout": self._settings.redis_timeout_ms / 1000,
            "socket_connect_timeout": self._settings.redis_connect_timeout_ms / 1000,
            # Retrying is the failure mode's job; a client retry would multiply the timeout.
            "retry": Retry(NoBackoff(), 0),
        }
        if self._cluster:
            options["reinitialize_steps"] = 1
        return options

    def _sync_client(self) -> Any:
        if self._sync is None:
            if self._cluster:
                from redis.cluster import RedisCluster

                self._sync = RedisCluster.from_url(self._url, **self._client_options())
            else:
                from redis import Redis

                self._sync = Redis.from_url(self._url, **self._client_options())
        return self._sync

    def _calls(
        self, requests: Sequence[TakeRequest], now: float | None
    ) -> tuple[list[list[Any]], list[int] | None]:
        """Group requests into script calls whose keys share a node (a slot, on a cluster).

        Returns the calls and, when grouping reordered the requests, the request index of
        each reply in call order.
        """
        if not self._cluster:
            calls = [
                encode_call(requests[i : i + CALL_MAX], self._prefix, now)
                for i in range(0, len(requests), CALL_MAX)
            ]
            return calls, None
        from redis.crc import key_slot

        by_slot: dict[int, list[int]] = {}
        for index, req in enumerate(requests):
            slot = key_slot(bucket_key(self._prefix, req.key).encode())
            by_slot.setdefault(slot, []).append(index)
        calls = []
        order: list[int] = []
        for group in by_slot.values():
            for i in range(0, len(group), CALL_MAX):
                chunk = group[i : i + CALL_MAX]
                calls.append(encode_call([requests[j] for j in chunk], self._prefix, now))
                order.extend(chunk)
        return calls, order

    def _run_sync(self, requests: Sequence[TakeRequest], now: float | None) -> list[bytes]:
        client = self._sync_client()
        calls, order = self._calls(requests, now)
        replies = _pipeline(client, "EVALSHA", SCRIPT_SHA, calls).execute(raise_on_error=False)
        missing = self._missing_script(replies)
        if missing:
            retry = _pipeline(client, "EVAL", SCRIPT, [calls[i] for i in missing])
            _merge(replies, missing, retry.execute(raise_on_error=False))
        return self._flatten(order, replies)

    def _missing_script(self, replies: list[Any]) -> list[int]:
        """The calls that met NOSCRIPT (a restarted server, a node that never saw the script)."""
        return [i for i, reply in enumerate(replies) if isinstance(reply, self._noscript)]

    def _flatten(self, order: list[int] | None, replies: list[Any]) -> list[bytes]:
        """One reply per request, in request order (cluster grouping reorders them)."""
        flat: list[bytes] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                if isinstance(reply, self._unavailable):
                    raise reply
                raise StoreError(f"the bucket script failed: {reply}") from reply
            flat.extend(reply)
        if order is None:
            return flat
        out: list[bytes] = [b""] * len(flat)
        for position, index in enumerate(order):
            out[index] = flat[position]
        return out

    # -- asyncio client -------------------------------------------------------------

    def _bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        # An asyncio client belongs to one loop; a new loop (a new test, a restarted app)
        # gets a new client rather than a confusing "attached to a different loop" error.
        if self._async_loop is not loop:
            self._async = None
            self._async_loop = loop
            self._pending = []
            self._drainer = None

    def _async_client(self) -> AsyncRedis | AsyncRedisCluster:
        if self._async is None:
            if self._cluster:
                from redis.asyncio.cluster import RedisCluster as ACluster

                self._async = ACluster.from_url(self._url, **self._client_options())
            else:
                from redis.asyncio import Redis as ARedis

                self._async = ARedis.from_url(self._url, **self._client_options())
        return self._async

    async def _drain(self) -> None:
        max_batch = self._settings.redis_max_batch
        try:
            while self._pending:
                batch = self._pending[:max_batch]
                del self._pending[:max_batch]
                try:
                    decisions = await self._adecide([req for req, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), decision in zip(batch, decisions, strict=True):
                    if not future.done():
                        future.set_result(decision)
        finally:
            self._drainer = None

    async def _adecide(self, requests: list[TakeRequest]) -> list[Decision]:
        if not requests:
            return []
        if self._clock() < self._down_until:
            return self._fallback(requests)
        try:
            replies = await self._run_async(requests)
        except self._unavailable as exc:
            self._mark_down(exc)
            return self._fallback(requests)
        self._mark_up()
        return [_decode(r) for r in replies]

    async def _run_async(self, requests: Sequence[TakeRequest]) -> list[bytes]:
        client = self._async_client()
        calls, order = self._calls(requests, None)
        pipe = _pipeline(client, "EVALSHA", SCRIPT_SHA, calls)
        replies = await pipe.execute(raise_on_error=False)
        missing = self._missing_script(replies)
        if missing:
            retry = _pipeline(client, "EVAL", SCRIPT, [calls[i] for i in missing])
            _merge(replies, missing, await retry.execute(raise_on_error=False))
        return self._flatten(order, replies)
