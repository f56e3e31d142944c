"""Schemathesis against the served OpenAPI document: every operation, over real HTTP on
loopback, on the memory store and on a real redis-server, with valid and invalid data. No
answer may be a 5xx, invalid data must be rejected, the admin endpoint must refuse a request
without its token, and every answer must match what the document declares: its status code,
content type, headers and body schema."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import settings
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from schemathesis import Case, SerializationContext
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from openclaw.limiter import create_store
from openclaw.policy.static import PolicyHolder
from openclaw.service.app import create_app
from openclaw.service.openapi import openapi_spec
from openclaw.service.server import BackgroundServer, close_telemetry
from openclaw.settings import Settings
from openclaw.telemetry.batcher import TelemetryBatcher
from openclaw.telemetry.stores import open_event_store
from openclaw.testing.redis import RedisServer

TOKEN = "schemathesis-token"

# Small buckets, so generated traffic drains some and denials (429 in enforce mode) are
# exercised too; a route with limits of its own, and a client with an override.
POLICY = """
default_tier = "free"

[tiers.free]
limits = [{ capacity = 3, refill_rate = 0.5 }, { capacity = 50, refill_rate = 0.1 }]

[tiers.free.routes."/search"]
limits = [{ capacity = 2, refill_rate = 0.01 }]

[tiers.pro]
limits = [{ capacity = 1000, refill_rate = 100 }]

[clients.acme]
tier = "pro"
"""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]

TELEMETRY = "/api/v1/telemetry"


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: SerializationContext, value: Any) -> bytes:
    """The NDJSON body: each item of the generated array on a line of its own; anything
    else (negative data) as one line. json, not orjson: negative data has integers past 64
    bits, which are JSON and must reach the server."""
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def telemetry_rejects_invalid_lines(ctx: CheckContext, response: Any, case: Case[Any]) -> None:
    """negative_data_rejection, for the telemetry endpoint: a body with invalid events may
    be accepted in part (the valid lines are, by design), so a 202 must report rejections."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return
    if response.status_code < 300:
        answer = response.json()
        assert answer["rejected"] >= 1, f"invalid data accepted whole: {answer}"
    else:
        assert 400 <= response.status_code < 500, response.status_code


TELEMETRY_CHECKS = [
    *(check for check in CHECKS if check is not negative_data_rejection),
    telemetry_rejects_invalid_lines,
]


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def api_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(POLICY)
    store_url = "memory://"
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        store_url = redis.url
    settings_ = Settings(
        store_url=store_url,
        # Buckets of their own on the session's shared server.
        redis_key_prefix=f"st{uuid.uuid4().hex[:8]}",
        policy_path=path,
        enforce=True,
        legacy_headers=True,
        admin_token=SecretStr(TOKEN),
        max_body_bytes=4096,
        max_batch=20,
        telemetry_max_body_bytes=4096,
    )
    store = create_store(settings_)
    registry = CollectorRegistry()
    events = tmp_path_factory.mktemp("telemetry") / "events.duckdb"
    event_store = open_event_store(f"duckdb://{events}", settings=settings_)
    telemetry = TelemetryBatcher.from_settings(event_store, settings_, registry).start()

    async def close_queue() -> None:
        await asyncio.to_thread(close_telemetry, telemetry, event_store, timeout_s=10)

    app = create_app(
        settings_,
        store,
        PolicyHolder.from_file(path),
        registry,
        on_shutdown=[close_queue, store.aclose],
        telemetry=telemetry,
    )
    with BackgroundServer(app, settings_) as server:
        yield server.url


# The document the server serves at /openapi.json (the last test here checks they are equal),
# loaded at import so that each operation is a test of its own. (Loading it from the running
# server needs schemathesis.pytest.from_fixture, which does not work with pytest 9.)
schema = schemathesis.openapi.from_dict(
    openapi_spec(),
    # Invalid data may be rejected as too large (413) too: a generated body or batch can be
    # over the limits the server is given before any field in it is looked at.
    config=schemathesis.Config.from_dict(
        {
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 405, 409, 413, 422, 429]
                }
            }
        }
    ),
)


@schema.parametrize()
# deadline=None: a request over loopback takes what it takes; max_examples bounds the time.
@settings(max_examples=75, deadline=None)
def test_api_conforms_to_its_openapi_document(case: Case[Any], api_url: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    checks = TELEMETRY_CHECKS if case.operation.path == TELEMETRY else CHECKS
    case.call_and_validate(base_url=api_url, headers=headers, checks=checks)


def test_the_document_tested_is_the_one_served(api_url: str) -> None:
    served = httpx.get(f"{api_url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == openapi_spec()
