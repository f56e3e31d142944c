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
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openclaw.errors import StoreError
from openclaw.limiter.base import BucketStore
from openclaw.service import headers as rl_headers
from openclaw.service.app import PolicySource

ANONYMOUS: Final = "anonymous"


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
    ) -> None:
        self.app = app
        self.store = store
        self.policies = policies
        self.client_id = client_id
        self.cost = cost
        self.route = route
        self.legacy_headers = legacy_headers
        self.fail_open = fail_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = self.client_id(scope)
        route = self.route(scope) if self.route is not None else None
        cost = self.cost(scope) if self.cost is not None else 1.0
        policy = self.policies.current
        limits = policy.limits_for(client, route=route)
        tier = policy.tier_of(client)
        key = client if route is None else f"{client}\x1f{route}"
        try:
            decision = await self.store.atake(key, limits, cost=cost)
        except StoreError:
            if not self.fail_open:
                await _respond(send, 503, {"error": "store_error", "reason": "store failed"}, {})
                return
            await self.app(scope, receive, send)
            return
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


async def _respond(send: Send, status: int, body: dict[str, str], headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
