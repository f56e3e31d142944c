"""Envoy's external rate-limit API: ``envoy.service.ratelimit.v3.RateLimitService``.

An Envoy proxy's ``envoy.filters.http.ratelimit`` filter asks ``ShouldRateLimit`` with a
domain and descriptors; each descriptor is decided as its own bucket:

* the bucket key is ``domain|key1=value1|key2=value2`` (entries in the order Envoy sends);
* its limits come from the policy: the client is the value of a ``client_id`` entry (e.g.
  from ``request_headers: {header_name: x-client-id, descriptor_key: client_id}``), else
  ``remote_address``, else the whole key; a ``route`` or ``path`` entry selects route limits;
* the cost is the descriptor's ``hits_addend``, else the request's, else 1;
* the answer is ``OVER_LIMIT`` when any descriptor is over, with per-descriptor
  ``current_limit``, ``limit_remaining`` and ``duration_until_reset``.

Needs the ``grpc`` extra (grpcio and xds-protos), imported only when this module is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Final

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from openclaw.errors import InvalidParamsError, StoreError
from openclaw.limiter.base import BucketStore, TakeRequest
from openclaw.policy.base import Policy, bucket_of, cut_batch_waits, version_for
from openclaw.service.headers import binding_index
from openclaw.service.metrics import Metrics

CLIENT_KEYS: Final = ("client_id", "remote_address")
ROUTE_KEYS: Final = ("route", "path")

_Unit = rls_pb2.RateLimitResponse.RateLimit.Unit
# Envoy states a limit as whole requests per unit; a token bucket's rate is per second, so
# report it in the smallest unit where it is at least one whole request.
_UNITS: Final = (
    (_Unit.SECOND, 1.0),
    (_Unit.MINUTE, 60.0),
    (_Unit.HOUR, 3600.0),
    (_Unit.DAY, 86400.0),
)


def descriptor_key(domain: str, entries: list[tuple[str, str]]) -> str:
    return "|".join([domain, *(f"{k}={v}" for k, v in entries)])


def _current_limit(refill_rate: float, name: str) -> Any:
    unit, seconds = next(((u, s) for u, s in _UNITS if refill_rate * s >= 1.0), _UNITS[-1])
    return rls_pb2.RateLimitResponse.RateLimit(
        name=name, requests_per_unit=int(refill_rate * seconds), unit=unit
    )


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """``ShouldRateLimit`` on a bucket store, with limits from the policy in force."""

    def __init__(
        self, store: BucketStore, policy: Callable[[], Policy], metrics: Metrics | None = None
    ) -> None:
        self._store = store
        self._policy = policy
        self._metrics = metrics

    async def ShouldRateLimit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802 (the RPC's name)
        if not request.domain:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "domain must not be empty")
        if not request.descriptors:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no descriptors to decide")
        policy = self._policy()
        default_hits = request.hits_addend or 1
        takes: list[TakeRequest] = []
        clients: list[str] = []
        for descriptor in request.descriptors:
            entries = [(e.key, e.value) for e in descriptor.entries]
            if not entries:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a descriptor has no entries")
            key = descriptor_key(request.domain, entries)
            named = dict(entries)
            client = next((named[k] for k in CLIENT_KEYS if k in named), key)
            route = next((named[k] for k in ROUTE_KEYS if k in named), None)
            hits = (
                descriptor.hits_addend.value if descriptor.HasField("hits_addend") else default_hits
            )
            clients.append(client)
            store_key, ttl = bucket_of(policy, client, key)
            try:
                takes.append(
                    TakeRequest.of(
                        store_key, policy.limits_for(client, route=route), cost=hits, ttl=ttl
                    )
                )
            except InvalidParamsError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        metrics = self._metrics
        started = time.perf_counter()
        try:
            decisions = await self._store.atake_many(takes)
        except StoreError as exc:
            # UNAVAILABLE: Envoy applies its own failure_mode_deny, as for a dead service.
            if metrics is not None:
                metrics.store_errors.inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the bucket store failed: {exc}")
        decisions = cut_batch_waits(policy, takes, decisions)
        if metrics is not None:
            # The HTTP endpoints' series: latency by endpoint, decisions by the version that
            # decided (a canary's challenger for its clients).
            metrics.observe_latency("grpc", time.perf_counter() - started)
            for client, decision in zip(clients, decisions, strict=True):
                metrics.observe(
                    decision, policy=policy.name, model_version=version_for(policy, client)
                )

        response = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
        for take, client, decision in zip(takes, clients, decisions, strict=True):
            binding = take.limits[binding_index(take.limits, decision)]
            status = response.statuses.add()
            status.code = (
                rls_pb2.RateLimitResponse.OK
                if decision.allowed
                else rls_pb2.RateLimitResponse.OVER_LIMIT
            )
            status.current_limit.CopyFrom(
                _current_limit(binding.refill_rate, policy.tier_of(client))
            )
            status.limit_remaining = int(max(decision.remaining, 0.0))
            if math.isfinite(decision.reset_after):
                status.duration_until_reset.FromNanoseconds(int(decision.reset_after * 1e9))
            if not decision.allowed:
                response.overall_code = rls_pb2.RateLimitResponse.OVER_LIMIT
        return response


async def start_grpc_server(
    store: BucketStore,
    policy: Callable[[], Policy],
    *,
    host: str,
    port: int,
    metrics: Metrics | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start serving on ``host:port`` (0 picks a free port); returns the server and port.
    With ``metrics`` (the app's: ``app.state.service.metrics``), decisions are counted in the
    same series as the HTTP endpoints'."""
    server = grpc.aio.server()
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
        RateLimitServicer(store, policy, metrics), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound
