"""ASGI middleware: rate-limit a Starlette or FastAPI app in-process with the same engine.

```python
from starlette.middleware import Middleware
from openclaw.limiter import MemoryStore
from openclaw.policy.static import PolicyHolder
from openclaw.service.middleware import RateLimitMiddleware

app = Starlette(routes=..., middleware=[
    Middleware(RateLimitMiddleware, store=MemoryStore(), policies=PolicyHolder.from_file(None)),
])
```

Every HTTP request is charged to its client (``X-Client-ID``, else the remote address) before
the app sees it. Allowed responses carry ``RateLimit-Policy`` and ``RateLimit``; a denied
request never reaches the app and is answered 429 with those and ``Retry-After``.

With ``telemetry=`` (a started :class:`~openclaw.telemetry.batcher.TelemetryBatcher`), every
request it sees, denied ones included, also becomes one telemetry event: the client, when it
arrived, its status, its route template (``/users/{id}``, else the path), method, response
bytes and how long it took, timed with the injected clock.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import time
from collections.abc import Callable
from typing import Final

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openclaw.clock import Clock, monotonic
from openclaw.errors import StoreError, TelemetryQueueFull
from openclaw.limiter.base import BucketStore
from openclaw.policy.base import bucket_of, cut_waits, window_left
from openclaw.service import headers as rl_headers
from openclaw.service.app import PolicySource
from openclaw.telemetry.batcher import TelemetryBatcher
from openclaw.telemetry.events import MAX_METHOD_LENGTH, MAX_ROUTE_LENGTH, Event

ANONYMOUS: Final = "anonymous"
#: The source label of the events this middleware emits.
SOURCE: Final = "middleware"


def client_from_scope(scope: Scope) -> str:
    """``X-Client-ID``, else the remote address, else a shared anonymous bucket."""
    for name, value in scope.get("headers", ()):
        if name == b"x-client-id" and value:
            return str(value.decode("latin-1"))
    client = scope.get("client")
    if client:
        return str(client[0])
    return ANONYMOUS


class RateLimitMiddleware:
    """Charge each HTTP request to its client's buckets; 429 when they deny.

    ``client_id``, ``cost`` and ``route`` map a request to what is charged (by default: the
    client as above, cost 1, no route). ``fail_open`` decides what a store error means: the
    store's own failure mode already covers an unreachable Redis, so this is for the rest.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: BucketStore,
        policies: PolicySource,
        client_id: Callable[[Scope], str] = client_from_scope,
        cost: Callable[[Scope], float] | None = None,
        route: Callable[[Scope], str | None] | None = None,
        legacy_headers: bool = False,
        fail_open: bool = True,
        telemetry: TelemetryBatcher | None = None,
        max_client_id_length: int = 256,
        clock: Clock = monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.store = store
        self.policies = policies
        self.client_id = client_id
        self.cost = cost
        self.route = route
        self.legacy_headers = legacy_headers
        self.fail_open = fail_open
        self.telemetry = telemetry
        self.max_client_id_length = max_client_id_length
        self.clock = clock
        self.wall_clock = wall_clock
        # Event ids: a random prefix per middleware and a counter, unique without a uuid4
        # per request.
        self._id_prefix = f"m{secrets.token_hex(8)}-"
        self._ids = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.telemetry is None:
            await self._limited(scope, receive, send)
            return
        arrived = self.wall_clock()
        started = self.clock()
        # What the server answers when the app raises before responding, with a body this
        # middleware never sees (None: unknown).
        status = 500
        sent: int | None = None

        async def send_observed(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = 0
            elif message["type"] == "http.response.body" and sent is not None:
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self._limited(scope, receive, send_observed)
        finally:
            self._emit(scope, arrived, (self.clock() - started) * 1000.0, status, sent)

    def _emit(
        self, scope: Scope, arrived: float, took_ms: float, status: int, sent: int | None
    ) -> None:
        assert self.telemetry is not None
        client = self.client_id(scope)
        if len(client) > self.max_client_id_length:
            self.telemetry.metrics.count_rejected({"too_long": 1}, source=SOURCE)
            return
        route = route_template(scope)
        method = scope.get("method")
        event = Event(
            event_id=f"{self._id_prefix}{next(self._ids)}",
            client_id=client,
            ts_us=round(arrived * 1_000_000),
            status_code=status,
            response_time_ms=max(0.0, took_ms),
            route=route[:MAX_ROUTE_LENGTH] if isinstance(route, str) else None,
            method=method if isinstance(method, str) and len(method) <= MAX_METHOD_LENGTH else None,
            bytes=sent,
        )
        # A full queue counted the refusal; a request must not fail for its telemetry.
        with contextlib.suppress(TelemetryQueueFull):
            self.telemetry.submit_event(event, source=SOURCE)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self.client_id(scope)
        route = self.route(scope) if self.route is not None else None
        cost = self.cost(scope) if self.cost is not None else 1.0
        policy = self.policies.current
        limits = policy.limits_for(client, route=route)
        tier = policy.tier_of(client)
        key, ttl = bucket_of(policy, client, client if route is None else f"{client}\x1f{route}")
        try:
            decision = await self.store.atake(key, limits, cost=cost, ttl=ttl)
        except StoreError:
            if not self.fail_open:
                await _respond(send, 503, {"error": "store_error", "reason": "store failed"}, {})
                return
            await self.app(scope, receive, send)
            return
        if ttl is not None and (left := window_left(policy)) is not None:
            decision = cut_waits(decision, left)
        headers = rl_headers.rate_limit_headers(
            tier,
            limits,
            decision,
            throttled=not decision.allowed,
            legacy_headers=self.legacy_headers,
        )
        if not decision.allowed:
            reason = (
                "the request costs more than the limit allows"
                if decision.retry_never
                else "too many requests"
            )
            await _respond(send, 429, {"error": "rate_limited", "reason": reason}, headers)
            return
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def route_template(scope: Scope) -> str | None:
    """The route's template (``/items/{id}``), else the raw path: templates keep the route
    column to a few values where raw paths would hold every id. The router leaves the route
    it matched in the scope; a request this middleware denied never reached the router, so
    the app's routes are matched here (only then: a denial is the rare case)."""
    matched = scope.get("route")
    if matched is None:
        router = getattr(scope.get("app"), "router", None)
        for candidate in getattr(router, "routes", ()):
            try:
                match, _ = candidate.matches(scope)
            except Exception:  # noqa: S112 - a custom route must not fail a request
                continue
            if match is Match.FULL:
                matched = candidate
                break
    path = getattr(matched, "path", None) or scope.get("path")
    return path if isinstance(path, str) else None


async def _respond(send: Send, status: int, body: dict[str, str], headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
