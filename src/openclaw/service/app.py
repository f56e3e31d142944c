"""The Rating API: an ASGI app deciding rate requests over HTTP/JSON.

Starlette, not FastAPI: on the same JSON endpoint FastAPI's per-request validation and
dependency machinery cost about four times Starlette's own overhead (see the service notes in
the README), and a decision is meant to cost little more than its store round trip. The
OpenAPI document is therefore written by hand (:mod:`openclaw.service.openapi`) and checked
against the app by the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openclaw.errors import CanaryError, RequestError, StoreError
from openclaw.limiter.base import BucketStore, TakeRequest
from openclaw.limiter.core import NEVER, BucketParams, Decision
from openclaw.policy.base import (
    Policy,
    bucket_of,
    cut_batch_waits,
    cut_waits,
    version_for,
    window_left,
)
from openclaw.policy.learned import LearnedPolicy, describe_params
from openclaw.service import headers as rl_headers
from openclaw.service.metrics import Metrics
from openclaw.service.openapi import openapi_spec
from openclaw.service.telemetry import TelemetryEndpoint, read_body
from openclaw.settings import Settings
from openclaw.telemetry.batcher import TelemetryBatcher

JSON_TYPE = "application/json"

#: Separates a client id from a route in a store key; client ids may not contain it, so a
#: (client, route) key can never collide with another client's own key.
ROUTE_SEPARATOR = "\x1f"


class PolicySource(Protocol):
    """What the app needs of a policy holder (``openclaw.policy.static.PolicyHolder``)."""

    @property
    def current(self) -> Policy: ...

    def reload(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class RateQuery:
    """One decision asked for: who, how much, and optionally for which route."""

    client_id: str
    cost: float
    route: str | None = None

    @property
    def key(self) -> str:
        """The store key: a client's buckets, or its buckets for one route."""
        if self.route is None:
            return self.client_id
        return f"{self.client_id}{ROUTE_SEPARATOR}{self.route}"


def dumps(body: Mapping[str, Any]) -> bytes:
    # orjson: a tenth of json.dumps's time. JSON has no inf or NaN: callers turn NEVER into
    # null before this, and orjson writes any other non-finite float as null.
    return orjson.dumps(body)


def json_response(
    body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type=JSON_TYPE)


def error_response(
    status: int, code: str, reason: str, headers: Mapping[str, str] | None = None
) -> Response:
    return json_response({"error": code, "reason": reason}, status, headers)


def query_fields(raw: bytes) -> dict[str, object]:
    """What ``dict(request.query_params)`` gives (the last value of a repeated name wins),
    without building Starlette's multidict: a tenth of a decision's time otherwise."""
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    # Nothing to unquote, the usual case: parse_qsl's result, a fifth of its time (it
    # unquotes every name and value).
    fields: dict[str, object] = {}
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            fields[name] = value
    return fields


def finite_or_none(value: float) -> float | None:
    return None if value == NEVER or math.isnan(value) else value


def decision_body(
    decision: Decision, query: RateQuery, *, tier: str, policy: Policy
) -> dict[str, Any]:
    return {
        "allowed": decision.allowed,
        "remaining": decision.remaining,
        "limit": decision.limit,
        "retry_after": finite_or_none(decision.retry_after),
        "reset_after": finite_or_none(decision.reset_after),
        "cost": query.cost,
        "client_id": query.client_id,
        "route": query.route,
        "tier": tier,
        "policy": {"name": policy.name, "version": version_for(policy, query.client_id)},
    }


def limits_body(tier: str, limits: Sequence[BucketParams]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "capacity": params.capacity,
            "refill_rate": params.refill_rate,
            "window_s": rl_headers.window_seconds(params),
        }
        for name, params in zip(rl_headers.limit_names(tier, len(limits)), limits, strict=True)
    ]


#: A field not sent at all, as opposed to one sent as null.
_ABSENT: Final = object()


def batch_body(
    decisions: Sequence[Decision],
    *,
    clients: Sequence[str],
    routes: Sequence[str | None],
    costs: Sequence[float],
    tiers: Sequence[str],
    policy: Policy,
) -> tuple[bytes, int, int]:
    """The batch answer as JSON, and how many decisions allowed and how many underflowed.

    :func:`decision_body` inlined: a call and a dict of its own per decision cost more than
    the decision; the ``policy`` object is one dict shared by every item."""
    described = {"name": policy.name, "version": policy.version}
    # A model canary serves some clients with the challenger: their items name its version.
    canary = getattr(policy, "canary_version", None)
    other = {"name": policy.name, "version": canary}
    allowed = underflow = 0
    out = []
    for decision, client, route, cost, tier in zip(
        decisions, clients, routes, costs, tiers, strict=True
    ):
        if decision.allowed:
            allowed += 1
        elif decision.remaining < 1.0:
            underflow += 1
        retry = decision.retry_after
        reset = decision.reset_after
        out.append(
            {
                "allowed": decision.allowed,
                "remaining": decision.remaining,
                "limit": decision.limit,
                # finite_or_none, inlined: NEVER and NaN are not < NEVER
                "retry_after": retry if retry < NEVER else None,
                "reset_after": reset if reset < NEVER else None,
                "cost": cost,
                "client_id": client,
                "route": route,
                "tier": tier,
                "policy": described
                if canary is None or version_for(policy, client) != canary
                else other,
            }
        )
    return orjson.dumps({"decisions": out}), allowed, underflow


class Validator:
    """Turns untrusted request fields into a :class:`RateQuery`, or a :class:`RequestError`
    whose reason names the field."""

    def __init__(self, settings: Settings) -> None:
        self._max_cost = settings.max_cost
        self._max_id = settings.max_client_id_length

    def text(self, value: object, field: str) -> str:
        if not isinstance(value, str):
            raise RequestError(f"{field} must be a string", status=422, code="invalid_field")
        if not value:
            raise RequestError(f"{field} must not be empty", status=422, code="invalid_field")
        if len(value) > self._max_id:
            raise RequestError(
                f"{field} is longer than {self._max_id} characters",
                status=422,
                code="invalid_field",
            )
        if not value.isprintable():
            raise RequestError(
                f"{field} must not contain control characters", status=422, code="invalid_field"
            )
        return value

    def cost(self, value: object) -> float:
        if isinstance(value, str):
            text = value
            try:
                value = float(text)
            except ValueError:
                raise RequestError(
                    f"cost must be a number, got {text[:40]!r}", status=422, code="invalid_field"
                ) from None
        # bool is an int to Python, never a cost to a caller.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RequestError("cost must be a number", status=422, code="invalid_field")
        cost = float(value)
        if not math.isfinite(cost) or cost < 0 or cost > self._max_cost:
            raise RequestError(
                f"cost must be a finite number from 0 to {self._max_cost:g}, got {cost!r}",
                status=422,
                code="invalid_cost",
            )
        return cost

    def query(
        self, fields: Mapping[str, object], request: Request, *, where: str = ""
    ) -> RateQuery:
        # An explicit null is a caller's bug, not "absent": it must not silently charge the
        # remote address (a gateway's, for a batch) instead of the client meant.
        client = fields.get("client_id", _ABSENT)
        if client is _ABSENT:
            client = request.headers.get("x-client-id")
            if client is None and request.client is not None:
                client = request.client.host
            if client is None:
                raise RequestError(
                    "no client id: send client_id, an X-Client-ID header, or connect directly",
                    status=422,
                    code="invalid_field",
                )
        route = fields.get("route")
        return RateQuery(
            self.text(client, f"{where}client_id"),
            self.cost(fields.get("cost", 1.0)),
            None if route is None else self.text(route, f"{where}route"),
        )


RATE_FIELDS = frozenset({"client_id", "cost", "route"})


def check_fields(body: Mapping[str, object], allowed: frozenset[str], where: str = "") -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(
            f"unknown field {where}{unknown[0]!r}: expected {sorted(allowed)}",
            status=422,
            code="invalid_field",
        )


class Service:
    """The endpoints, bound to their injected dependencies."""

    def __init__(
        self,
        settings: Settings,
        store: BucketStore,
        policies: PolicySource,
        registry: CollectorRegistry,
        *,
        telemetry: TelemetryBatcher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.policies = policies
        self.registry = registry
        self.telemetry = telemetry
        self.telemetry_endpoint = TelemetryEndpoint(
            telemetry,
            max_body_bytes=settings.telemetry_max_body_bytes,
            max_client_id_length=settings.max_client_id_length,
        )
        self.metrics = Metrics.register(registry, store)
        self.validate = Validator(settings)

    # -- request bodies --------------------------------------------------------------

    async def read_json(self, request: Request) -> object | None:
        """The JSON body, None when there is none; 413 past ``max_body_bytes`` without
        reading the rest."""
        body = await read_body(request, self.settings.max_body_bytes)
        if not body:
            return None  # whitespace is not "no body": it is not JSON either (400)
        # orjson: about half json.loads's time on a batch, and it refuses what JSON has not
        # (NaN, Infinity, numbers beyond a double, lone surrogates, invalid UTF-8) by itself.
        try:
            parsed: object = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"malformed JSON: {exc.msg}", code="invalid_json") from None
        return parsed

    async def read_object(self, request: Request) -> dict[str, object] | None:
        body = await self.read_json(request)
        if body is not None and not isinstance(body, dict):
            raise RequestError("the body must be a JSON object", status=422, code="invalid_body")
        return body

    # -- decisions -------------------------------------------------------------------

    async def rate(self, request: Request) -> Response:
        fields = query_fields(request.scope["query_string"])
        if request.method == "POST":
            body = await self.read_object(request)
            if body is not None:
                check_fields(body, RATE_FIELDS)
                # Which of two values was meant is a guess: an empty client_id in the query
                # must not pass because the body happened to hold a good one.
                twice = sorted(fields.keys() & body.keys())
                if twice:
                    raise RequestError(
                        f"{twice[0]} is given both in the query and in the body: send it once",
                        status=422,
                        code="invalid_field",
                    )
                fields.update(body)
        query = self.validate.query(fields, request)
        policy = self.policies.current
        limits = policy.limits_for(query.client_id, route=query.route)
        tier = policy.tier_of(query.client_id)
        started = time.perf_counter()
        key, ttl = bucket_of(policy, query.client_id, query.key)
        try:
            decision = await self.store.atake(key, limits, cost=query.cost, ttl=ttl)
        except StoreError as exc:
            self.metrics.store_errors.inc()
            raise RequestError(
                f"the bucket store failed: {exc}", status=503, code="store_error"
            ) from exc
        self.metrics.observe_latency("rate", time.perf_counter() - started)
        if ttl is not None and (left := window_left(policy)) is not None:
            decision = cut_waits(decision, left)
        self.metrics.observe(
            decision, policy=policy.name, model_version=version_for(policy, query.client_id)
        )
        throttled = self.settings.enforce and not decision.allowed
        headers = rl_headers.rate_limit_headers(
            tier,
            limits,
            decision,
            throttled=throttled,
            legacy_headers=self.settings.legacy_headers,
        )
        body = decision_body(decision, query, tier=tier, policy=policy)
        if throttled:
            body["error"] = "rate_limited"
            body["reason"] = (
                "the cost exceeds the limit: no retry can succeed"
                if decision.retry_never
                else f"over the limit: retry in {decision.retry_after:.3f} s"
            )
            return json_response(body, 429, headers)
        return json_response(body, 200, headers)

    async def batch(self, request: Request) -> Response:
        # The hot path of the service: per item, only what the answer needs. The common item
        # ({"client_id": "<printable id>"}, with an optional plain cost) is checked inline;
        # anything else goes through the Validator, which raises the same errors as before.
        body = await self.read_object(request)
        if body is None:
            raise RequestError("the body must be a JSON object with a 'requests' list")
        check_fields(body, frozenset({"requests"}))
        items = body.get("requests")
        if not isinstance(items, list):
            raise RequestError("requests must be a list", status=422, code="invalid_field")
        if len(items) > self.settings.max_batch:
            raise RequestError(
                f"at most {self.settings.max_batch} requests per batch, got {len(items)}",
                status=413,
                code="batch_too_large",
            )
        policy = self.policies.current
        limits_for = policy.limits_for
        tier_of = policy.tier_of
        keyer = getattr(policy, "bucket_of", None)  # a learned table keys buckets by window
        max_id = self.settings.max_client_id_length
        max_cost = self.settings.max_cost
        fields = RATE_FIELDS
        clients: list[str] = []
        routes: list[str | None] = []
        costs: list[float] = []
        tiers: list[str] = []
        takes: list[TakeRequest] = []
        for i, item in enumerate(items):
            if type(item) is dict and item.keys() <= fields:
                client = item.get("client_id")
                cost = item.get("cost", 1.0)
                if (
                    type(client) is str
                    and 0 < len(client) <= max_id
                    and client.isprintable()
                    and (type(cost) is float or type(cost) is int)
                    and 0 <= cost <= max_cost  # also False for NaN; inf is > max_cost
                    and item.get("route") is None
                ):
                    cost = float(cost)
                    clients.append(client)
                    routes.append(None)
                    costs.append(cost)
                    tiers.append(tier_of(client))
                    key, ttl = (client, None) if keyer is None else keyer(client, client)
                    takes.append(TakeRequest(key, limits_for(client), cost=cost, ttl=ttl))
                    continue
            query = self.batch_query(item, i, request)
            clients.append(query.client_id)
            routes.append(query.route)
            costs.append(query.cost)
            tiers.append(tier_of(query.client_id))
            key, ttl = bucket_of(policy, query.client_id, query.key)
            takes.append(
                TakeRequest(
                    key, limits_for(query.client_id, route=query.route), cost=query.cost, ttl=ttl
                )
            )
        started = time.perf_counter()
        try:
            decisions = await self.store.atake_many(takes)
        except StoreError as exc:
            self.metrics.store_errors.inc()
            raise RequestError(
                f"the bucket store failed: {exc}", status=503, code="store_error"
            ) from exc
        self.metrics.observe_latency("batch", time.perf_counter() - started)
        decisions = cut_batch_waits(policy, takes, decisions)
        answer, allowed, underflow = batch_body(
            decisions, clients=clients, routes=routes, costs=costs, tiers=tiers, policy=policy
        )
        self.count_batch(policy, decisions, clients, allowed=allowed, underflow=underflow)
        return Response(answer, media_type=JSON_TYPE)

    def count_batch(
        self,
        policy: Policy,
        decisions: Sequence[Decision],
        clients: Sequence[str],
        *,
        allowed: int,
        underflow: int,
    ) -> None:
        if getattr(policy, "canary_version", None) is None:
            self.metrics.observe_counts(
                allowed=allowed,
                denied=len(decisions) - allowed,
                underflow=underflow,
                policy=policy.name,
                model_version=policy.version,
            )
        else:  # per item: the canary's clients count under the challenger's version
            for decision, client in zip(decisions, clients, strict=True):
                self.metrics.observe(
                    decision, policy=policy.name, model_version=version_for(policy, client)
                )

    def batch_query(self, item: object, i: int, request: Request) -> RateQuery:
        """One batch item through the Validator: the errors name ``requests[i].<field>``."""
        where = f"requests[{i}]."
        if not isinstance(item, dict):
            raise RequestError(f"requests[{i}] must be an object", status=422, code="invalid_field")
        check_fields(item, RATE_FIELDS, where)
        return self.validate.query(item, request, where=where)

    async def params(self, request: Request) -> Response:
        client_id = self.validate.text(request.path_params["client_id"], "client_id")
        route_param = request.query_params.get("route")
        route = None if route_param is None else self.validate.text(route_param, "route")
        policy = self.policies.current
        limits = policy.limits_for(client_id, route=route)
        tier = policy.tier_of(client_id)
        return json_response(
            {
                "client_id": client_id,
                "route": route,
                "tier": tier,
                "policy": {"name": policy.name, "version": version_for(policy, client_id)},
                "limits": limits_body(tier, limits),
                # source, model_version, window, predicted, governor
                **describe_params(policy, client_id, route=route),
            }
        )

    # -- operations ------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        # ping() blocks (a Redis round trip with a millisecond timeout): keep it off the loop.
        store_ok = await run_in_threadpool(self.store.ping)
        policy: object = self.policies.current
        if not isinstance(policy, Policy):
            return error_response(503, "not_ready", "no policy is loaded")
        if not store_ok:
            detail = getattr(self.store, "last_error", None)
            reason = "the bucket store is unreachable" + (f": {detail}" if detail else "")
            return error_response(503, "not_ready", reason)
        ready: dict[str, Any] = {
            "status": "ready",
            "policy": {"name": policy.name, "version": policy.version},
        }
        # The learned policy says which model serves, and why the static policy does if none.
        status = getattr(self.policies, "status", None)
        if callable(status):
            ready["model"] = status()
        if self.telemetry is not None:
            if not await run_in_threadpool(self.telemetry.ping):
                detail = self.telemetry.last_error
                reason = "the telemetry store is unreachable" + (f": {detail}" if detail else "")
                return error_response(503, "not_ready", reason)
            ready["telemetry"] = {
                "store": self.telemetry.store.dialect,
                "queue_depth": self.telemetry.depth,
            }
        return json_response(ready)

    async def metrics_text(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_spec())

    async def reload(self, request: Request) -> Response:
        self.authorize(request)
        reason = await run_in_threadpool(self.policies.reload)
        policy = self.policies.current
        described = {"name": policy.name, "version": policy.version}
        if reason is not None:
            return json_response(
                {"error": "reload_failed", "reason": reason, "policy": described}, 409
            )
        return json_response({"reloaded": True, "policy": described})

    # -- the model canary (admin) ----------------------------------------------------------

    def _learned(self) -> LearnedPolicy:
        source = self.policies
        if not isinstance(source, LearnedPolicy):
            raise RequestError(
                "no model canary: the service runs policy_mode static (set "
                "OPENCLAW_POLICY_MODE=model)",
                status=409,
                code="no_canary",
            )
        return source

    async def canary_status(self, request: Request) -> Response:
        self.authorize(request)
        return json_response(self._learned().canary_status())

    async def canary_start(self, request: Request) -> Response:
        self.authorize(request)
        learned = self._learned()
        body = await self.read_object(request) or {}
        check_fields(body, frozenset({"version", "reason"}))
        version = body.get("version")
        reason = body.get("reason", "")
        if version is not None and not isinstance(version, str):
            raise RequestError("version must be a string", status=422, code="invalid_field")
        if not isinstance(reason, str):
            raise RequestError("reason must be a string", status=422, code="invalid_field")
        try:
            status = await run_in_threadpool(
                learned.start_canary, version, reason=reason or "started through the admin API"
            )
        except CanaryError as exc:
            raise RequestError(str(exc), status=409, code="canary_refused") from exc
        return json_response(status, 202)

    async def canary_abort(self, request: Request) -> Response:
        self.authorize(request)
        learned = self._learned()
        body = await self.read_object(request) or {}
        check_fields(body, frozenset({"reason"}))
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise RequestError("reason must be a string", status=422, code="invalid_field")
        try:
            status = await run_in_threadpool(learned.abort_canary, reason=reason)
        except CanaryError as exc:
            raise RequestError(str(exc), status=409, code="canary_refused") from exc
        return json_response(status)

    def authorize(self, request: Request) -> None:
        token = self.settings.admin_token
        if token is None:
            raise RequestError(
                "admin endpoints are disabled: set OPENCLAW_ADMIN_TOKEN to enable them",
                status=403,
                code="admin_disabled",
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        # compare_digest: the time taken must not tell an attacker how much of a guess matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise RequestError("a valid bearer token is required", status=401, code="unauthorized")


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(exc.status, exc.code, str(exc), extra)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    reason = {
        404: f"no such endpoint: {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), reason)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "the server failed; see its log")


def create_app(
    settings: Settings,
    store: BucketStore,
    policy_holder: PolicySource,
    registry: CollectorRegistry,
    *,
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
    telemetry: TelemetryBatcher | None = None,
    background: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Starlette:
    """The Rating API on injected dependencies.

    The caller owns the store; ``on_shutdown`` callbacks run when the server shuts down
    (after in-flight requests finish), which is where a caller closes what it opened.
    ``telemetry`` is the queue ``POST /api/v1/telemetry`` feeds (the caller closes it, which
    writes what is buffered); without one that endpoint answers 503. ``background`` tasks
    (the learned policy's window clock) run from start-up and are cancelled at shutdown,
    before the ``on_shutdown`` callbacks.
    """
    service = Service(settings, store, policy_holder, registry, telemetry=telemetry)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.ensure_future(job()) for job in background]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for callback in on_shutdown:
            await callback()

    params_route = Route("/api/v1/params/{client_id:path}", service.params, methods=["GET"])
    # Starlette's path convertor is ".*", which stops at a newline: an id holding one would be
    # a 404, or (at the end, where "$" matches) silently cut short, not the validator's 422.
    params_route.path_regex = re.compile(params_route.path_regex.pattern, re.DOTALL)
    routes = [
        Route("/api/v1/rate", service.rate, methods=["GET", "POST"]),
        Route("/api/v1/rate/batch", service.batch, methods=["POST"]),
        params_route,
        Route("/api/v1/admin/reload", service.reload, methods=["POST"]),
        Route("/api/v1/admin/canary", service.canary_status, methods=["GET"]),
        Route("/api/v1/admin/canary", service.canary_start, methods=["POST"]),
        Route("/api/v1/admin/canary/abort", service.canary_abort, methods=["POST"]),
        Route("/api/v1/telemetry", service.telemetry_endpoint.post, methods=["POST"]),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/readyz", service.readyz, methods=["GET"]),
        Route("/metrics", service.metrics_text, methods=["GET"]),
        Route("/openapi.json", service.openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RequestError: _request_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.service = service
    return app
