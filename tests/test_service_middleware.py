"""The ASGI middleware in a real Starlette app, over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openclaw.limiter import BucketParams, MemoryStore
from openclaw.service.middleware import RateLimitMiddleware
from openclaw.service.server import BackgroundServer
from openclaw.settings import Settings


class Counted:
    def __init__(self) -> None:
        self.calls = 0

    async def hello(self, request: Request) -> Response:
        self.calls += 1
        return JSONResponse({"hello": "world"}, headers={"X-App": "yes"})


@pytest.fixture
def app_and_counter() -> Iterator[tuple[httpx.Client, Counted]]:
    counted = Counted()
    store = MemoryStore()
    # A 3-token bucket that barely refills, so the fourth request is denied.
    limits = (BucketParams(3, 0.001),)

    class Tiny:
        name = "static"
        version = "test"

        def limits_for(
            self, client_id: str, *, route: str | None = None
        ) -> tuple[BucketParams, ...]:
            return limits

        def tier_of(self, client_id: str) -> str:
            return "tiny"

    class Holder:
        current = Tiny()

        def reload(self) -> str | None:
            return "nothing to reload"

    app = Starlette(
        routes=[Route("/hello", counted.hello)],
        middleware=[
            Middleware(
                RateLimitMiddleware,
                store=store,
                policies=Holder(),
                cost=lambda scope: (
                    2.0 if scope["path"] == "/hello" and scope["query_string"] else 1.0
                ),
            )
        ],
    )
    with BackgroundServer(app, Settings()) as server, httpx.Client(base_url=server.url) as client:
        yield client, counted


def test_allowed_requests_reach_the_app_with_headers(
    app_and_counter: tuple[httpx.Client, Counted],
) -> None:
    client, counted = app_and_counter
    r = client.get("/hello", headers={"X-Client-ID": "a"})
    assert r.status_code == 200
    assert r.json() == {"hello": "world"}
    assert r.headers["X-App"] == "yes"
    assert r.headers["RateLimit-Policy"] == '"tiny";q=3;w=3000'
    assert r.headers["RateLimit"].startswith('"tiny";r=2;t=')
    assert counted.calls == 1


def test_denied_requests_get_429_and_never_reach_the_app(
    app_and_counter: tuple[httpx.Client, Counted],
) -> None:
    client, counted = app_and_counter
    codes = [client.get("/hello", headers={"X-Client-ID": "b"}).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert counted.calls == 3
    r = client.get("/hello", headers={"X-Client-ID": "b"})
    assert r.status_code == 429
    assert r.json()["error"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 900
    assert r.headers["RateLimit"].startswith('"tiny";r=0;t=')
    # Another client has buckets of its own; the remote address is the default client.
    assert client.get("/hello").status_code == 200


def test_cost_callback_charges_more(app_and_counter: tuple[httpx.Client, Counted]) -> None:
    client, _ = app_and_counter
    headers = {"X-Client-ID": "c"}
    assert (
        client.get("/hello?big=1", headers=headers).headers["RateLimit"].startswith('"tiny";r=1;')
    )
    assert client.get("/hello?big=1", headers=headers).status_code == 429
    assert client.get("/hello", headers=headers).status_code == 200
