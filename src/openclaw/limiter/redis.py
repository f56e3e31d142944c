"""Bucket state in Redis or Redis Cluster: one packaged Lua script, one round trip.

* The read-modify-write is ``lua/take.lua``, run by ``EVALSHA``; after a restart (or on a
  cluster node that never saw it) the ``NOSCRIPT`` reply is answered with one ``EVAL`` that
  also reloads the script there.
* Numbers travel and are stored as the eight bytes of a double (``struct`` on both sides),
  never as decimal text: exact by construction, and formatting and parsing text was most of
  the cost of a decision, on the server and in Python.
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
import itertools
import logging
import struct
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

from openclaw.clock import Clock, monotonic
from openclaw.errors import ConfigError, InvalidParamsError, StoreError
from openclaw.limiter.base import Limits, TakeRequest
from openclaw.limiter.core import NEVER, Decision
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

    Every number goes in one argument of packed little-endian doubles: one argument is far
    cheaper for redis-py to send than five per request, and the script reads doubles with
    ``struct.unpack`` exactly and much faster than it parses decimal text.
    """
    keys = [f"{prefix}:{{{req.key}}}" for req in requests]  # bucket_key, inlined
    numbers: list[float] = []
    add = numbers.extend
    for req in requests:
        limits = req.limits
        ttl = NEVER if req.ttl is None else req.ttl
        if len(limits) == 1:
            params = limits[0]
            add((req.cost, ttl, 1.0, params.capacity, params.refill_rate))
        elif limits:
            add((req.cost, ttl, float(len(limits))))
            for params in limits:
                add((params.capacity, params.refill_rate))
        else:  # TakeRequest.of refuses this; a request built directly might not
            raise InvalidParamsError("a key needs at least one limit")
    packed = struct.pack(f"<{len(numbers)}d", *numbers)
    return [len(keys), *keys, "" if now is None else repr(now), packed]


#: One decision of a script reply: allowed, remaining, limit, retry_after, reset_after.
REPLY: Final = struct.Struct("<?dddd")


def decode_reply(reply: bytes) -> list[Decision]:
    """The decisions of one script call's reply, in request order."""
    return list(itertools.starmap(Decision, REPLY.iter_unpack(reply)))


def _hiredis_packing(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` packing commands with hiredis, in C, as redis-py's blocking
    client does; its asyncio client packs in Python, at more than the cost of a decision
    (some 0.4 us for each key of a script call). The class is unchanged without hiredis."""
    try:
        import hiredis
        from redis.connection import HiredisRespSerializer
    except ImportError:  # redis-py's own packing still works
        return connection_class
    pack = hiredis.pack_command
    packer = HiredisRespSerializer()  # what redis-py does, for the commands pack cannot take

    class HiredisPacking(connection_class):  # type: ignore[misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            name = args[0]
            if type(name) is str and " " not in name:  # EVALSHA, EVAL
                try:
                    return [pack(args)]
                except TypeError:
                    pass
            packed: list[bytes] = packer.pack(*args)
            return packed

    HiredisPacking.__name__ = f"HiredisPacking{connection_class.__name__}"
    return HiredisPacking


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
        if "decode_responses" in parse_qs(urlsplit(url).query, keep_blank_values=True):
            # Script replies are binary: decoded as text they would be garbled or refused.
            raise ConfigError("the Redis store URL must not set decode_responses")
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
        self._conn: Any = None  # the asyncio client's connection the drain uses
        # Requests waiting for the next round trip, in parts of at most redis_max_batch
        # with one future each: a batch is not a thousand futures.
        self._pending: list[tuple[list[TakeRequest], asyncio.Future[list[Decision]]]] = []
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
        self._response_error: type[BaseException] = rexc.ResponseError
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

    def take(
        self, key: str, limits: Limits, *, cost: float = 1.0, ttl: float | None = None
    ) -> Decision:
        return self.take_many([TakeRequest.of(key, limits, cost=cost, ttl=ttl)])[0]

    def take_at(
        self, key: str, limits: Limits, *, cost: float = 1.0, now: float, ttl: float | None = None
    ) -> Decision:
        """Decide at an explicit time instead of Redis ``TIME``: for tests only (a key's
        expiry still runs on the server's clock)."""
        return self.take_many([TakeRequest.of(key, limits, cost=cost, ttl=ttl)], now=now)[0]

    def take_many(
        self, requests: Sequence[TakeRequest], *, now: float | None = None
    ) -> list[Decision]:
        if not requests:
            return []
        if self._clock() < self._down_until:
            return self._fallback(requests)
        try:
            decisions = self._run_sync(requests, now)
        except self._unavailable as exc:
            self._mark_down(exc)
            return self._fallback(requests)
        self._mark_up()
        return decisions

    async def atake(
        self, key: str, limits: Limits, *, cost: float = 1.0, ttl: float | None = None
    ) -> Decision:
        # _enqueue for one request, inlined: this is the per-request path of the service.
        request = TakeRequest.of(key, limits, cost=cost, ttl=ttl)
        loop = asyncio.get_running_loop()
        if self._async_loop is not loop:
            self._bind_loop(loop)
        future: asyncio.Future[list[Decision]] = loop.create_future()
        self._pending.append(([request], future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return (await future)[0]

    async def atake_many(self, requests: Sequence[TakeRequest]) -> list[Decision]:
        # Through the same queue as atake: concurrent batches (gRPC requests with several
        # descriptors, HTTP batch calls) share round trips too.
        futures = self._enqueue(requests)
        if len(futures) == 1:
            return await futures[0]
        decisions: list[Decision] = []
        for part in await asyncio.gather(*futures, return_exceptions=True):  # all retrieved
            if isinstance(part, BaseException):
                raise part
            decisions += part
        return decisions

    def _enqueue(self, requests: Sequence[TakeRequest]) -> list[asyncio.Future[list[Decision]]]:
        loop = asyncio.get_running_loop()
        self._bind_loop(loop)
        size = self._settings.redis_max_batch
        futures: list[asyncio.Future[list[Decision]]] = []
        for i in range(0, len(requests), size):
            future: asyncio.Future[list[Decision]] = loop.create_future()
            self._pending.append((list(requests[i : i + size]), future))
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
                if self._conn is not None:
                    await self._async.connection_pool.release(self._conn)
                    self._conn = None
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

    def _run_sync(self, requests: Sequence[TakeRequest], now: float | None) -> list[Decision]:
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

    def _flatten(self, order: list[int] | None, replies: list[Any]) -> list[Decision]:
        """One decision per request, in request order (cluster grouping reorders them)."""
        flat: list[Decision] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                if isinstance(reply, self._unavailable):
                    raise reply
                raise StoreError(f"the bucket script failed: {reply}") from reply
            try:
                flat.extend(decode_reply(reply))
            except (TypeError, struct.error) as exc:
                # A str (a client decoding replies) or a truncated reply: never guess.
                raise StoreError(f"the bucket script answered {reply!r:.80}") from exc
        if order is None:
            return flat
        out: list[Decision] = flat.copy()
        for position, index in enumerate(order):
            out[index] = flat[position]
        return out

    # -- asyncio client -------------------------------------------------------------

    def _bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        # An asyncio client belongs to one loop; a new loop (a new test, a restarted app)
        # gets a new client rather than a confusing "attached to a different loop" error.
        if self._async_loop is not loop:
            self._async = None
            self._conn = None
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

                client = ARedis.from_url(self._url, **self._client_options())
                pool = client.connection_pool
                pool.connection_class = _hiredis_packing(pool.connection_class)
                self._async = client
        return self._async

    async def _drain(self) -> None:
        max_batch = self._settings.redis_max_batch
        try:
            while pending := self._pending:
                # Whole parts, up to max_batch requests (a part alone is never larger).
                size = len(pending[0][0])
                taken = 1
                while taken < len(pending) and size + len(pending[taken][0]) <= max_batch:
                    size += len(pending[taken][0])
                    taken += 1
                batch = pending[:taken]
                del pending[:taken]
                requests = batch[0][0] if taken == 1 else [r for part, _ in batch for r in part]
                try:
                    decisions = await self._adecide(requests)
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                start = 0
                for part, future in batch:
                    end = start + len(part)
                    if not future.done():
                        future.set_result(decisions[start:end])
                    start = end
        finally:
            self._drainer = None

    async def _adecide(self, requests: list[TakeRequest]) -> list[Decision]:
        if not requests:
            return []
        if self._clock() < self._down_until:
            return self._fallback(requests)
        try:
            decisions = await self._run_async(requests)
        except self._unavailable as exc:
            self._mark_down(exc)
            return self._fallback(requests)
        self._mark_up()
        return decisions

    async def _run_async(self, requests: Sequence[TakeRequest]) -> list[Decision]:
        client = self._async_client()
        calls, order = self._calls(requests, None)
        if self._cluster:
            pipe = _pipeline(client, "EVALSHA", SCRIPT_SHA, calls)
            replies = await pipe.execute(raise_on_error=False)
        else:
            replies = await self._round_trip(client, "EVALSHA", SCRIPT_SHA, calls)
        missing = self._missing_script(replies)
        if missing:
            retried = [calls[i] for i in missing]
            if self._cluster:
                retry = await _pipeline(client, "EVAL", SCRIPT, retried).execute(
                    raise_on_error=False
                )
            else:
                retry = await self._round_trip(client, "EVAL", SCRIPT, retried)
            _merge(replies, missing, retry)
        return self._flatten(order, replies)

    async def _round_trip(
        self, client: Any, command: str, script: str, calls: list[list[Any]]
    ) -> list[Any]:
        """What ``pipeline(transaction=False).execute(raise_on_error=False)`` does, on one
        server, without the pipeline: its command stack, retry wrapper, metrics hooks and
        response callbacks cost more than the decisions of a typical round trip. Still
        redis-py's pool, connection, parser, timeouts and error types: a failed send or
        read disconnects the connection and raises ConnectionError or TimeoutError."""
        conn = self._conn
        if conn is None:
            # Round trips are one at a time (the drain), so one connection, kept out of the
            # pool for the client's life, serves them all; a send reconnects it if an error
            # or a cancellation closed it.
            conn = self._conn = await client.connection_pool.get_connection()
        packed = conn.pack_commands([(command, script, *call) for call in calls])
        writer = conn._writer
        if writer is not None and not writer.transport.is_closing():
            # The socket takes a round trip's bytes at once (the transport buffers them):
            # redis-py's send would start a task (wait_for) to time out a wait that does not
            # happen. Only a full buffer waits, under the same timeout and errors.
            writer.writelines(packed)
            if writer.transport.get_write_buffer_size() > 0:
                await conn.send_packed_command([], check_health=False)
        else:
            await conn.send_packed_command(packed, check_health=False)
        replies: list[Any] = []
        for _ in calls:
            try:
                replies.append(await conn.read_response())
            except self._response_error as exc:  # read whole: the stream stays in step
                replies.append(exc)
        return replies
