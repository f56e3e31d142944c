"""Envoy's rate-limit protocol: the gRPC servicer over loopback, then a real Envoy proxy in
front of a small upstream, configured to ask OpenClaw."""

from __future__ import annotations

import asyncio
import http.server
import signal
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from prometheus_client import CollectorRegistry

from openclaw.limiter import BucketStore, MemoryStore, create_store
from openclaw.policy.static import PolicyHolder, StaticPolicy
from openclaw.service.grpc import start_grpc_server
from openclaw.service.metrics import Metrics
from openclaw.settings import Settings
from openclaw.testing.redis import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
ENVOY = ROOT / ".venv-envoy" / "bin" / "envoy"

POLICY = b"""
[tiers.default]
limits = [{ capacity = 100, refill_rate = 10 }]

[tiers.tight]
limits = [{ capacity = 3, refill_rate = 0.001 }]

[clients.alice]
tier = "tight"
"""

Response = rls_pb2.RateLimitResponse
#: Each gRPC server's metrics registry, by port.
REGISTRIES: dict[int, CollectorRegistry] = {}


@pytest.fixture(params=["memory", "redis"])
def grpc_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """OpenClaw's gRPC server on a loop of its own, in a thread, on each kind of store."""
    if request.param == "memory":
        store: BucketStore = MemoryStore()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        # Each test starts from empty buckets: the session's server is shared.
        prefix = f"grpc{uuid.uuid4().hex[:8]}"
        store = create_store(Settings(store_url=server.url, redis_key_prefix=prefix))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    holder = PolicyHolder(StaticPolicy.parse(POLICY, source="test", fmt="toml"))
    registry = CollectorRegistry()
    metrics = Metrics.register(registry, store)
    started = asyncio.run_coroutine_threadsafe(
        start_grpc_server(store, lambda: holder.current, host="127.0.0.1", port=0, metrics=metrics),
        loop,
    )
    grpc_server, port = started.result(timeout=10)
    REGISTRIES[port] = registry
    yield port
    del REGISTRIES[port]
    asyncio.run_coroutine_threadsafe(grpc_server.stop(grace=1), loop).result(timeout=10)
    asyncio.run_coroutine_threadsafe(store.aclose(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def ask(
    port: int, *descriptors: list[tuple[str, str]], hits: int = 0, domain: str = "api"
) -> object:
    request = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
    for entries in descriptors:
        descriptor = request.descriptors.add()
        for key, value in entries:
            descriptor.entries.add(key=key, value=value)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=5)


def test_over_the_limit_is_over_limit_with_per_descriptor_status(grpc_port: int) -> None:
    codes = [ask(grpc_port, [("client_id", "alice")]).overall_code for _ in range(5)]  # type: ignore[attr-defined]
    assert codes == [Response.OK] * 3 + [Response.OVER_LIMIT] * 2
    reply = ask(grpc_port, [("client_id", "bob")], [("client_id", "alice")])
    assert reply.overall_code == Response.OVER_LIMIT  # type: ignore[attr-defined]
    bob, alice = reply.statuses  # type: ignore[attr-defined]
    assert (bob.code, alice.code) == (Response.OK, Response.OVER_LIMIT)
    assert bob.limit_remaining == 99
    assert bob.current_limit.requests_per_unit == 10
    assert bob.current_limit.unit == Response.RateLimit.Unit.SECOND
    assert bob.current_limit.name == "default"
    assert alice.current_limit.name == "tight"
    assert alice.current_limit.unit == Response.RateLimit.Unit.HOUR  # 0.001/s = 3.6/h
    assert alice.duration_until_reset.ToTimedelta().total_seconds() == pytest.approx(3000, abs=1)
    # Counted in the HTTP endpoints' series: by result and version, latency by endpoint.
    registry = REGISTRIES[grpc_port]
    count = registry.get_sample_value
    policy_version = next(
        s.labels["model_version"]
        for f in registry.collect()
        if f.name == "openclaw_decisions"
        for s in f.samples
    )
    version = {"policy": "static", "model_version": policy_version}
    assert count("openclaw_decisions_total", {"result": "allowed", **version}) == 4
    assert count("openclaw_decisions_total", {"result": "denied", **version}) == 3
    assert count("openclaw_bucket_underflow_total", version) == 3
    assert count("openclaw_decision_latency_seconds_count", {"endpoint": "grpc"}) == 6


def test_hits_addend_per_request_and_per_descriptor(grpc_port: int) -> None:
    reply = ask(grpc_port, [("client_id", "carol")], hits=40)
    assert reply.statuses[0].limit_remaining == 60  # type: ignore[attr-defined]
    request = rls_pb2.RateLimitRequest(domain="api", hits_addend=40)
    descriptor = request.descriptors.add()
    descriptor.entries.add(key="client_id", value="carol")
    descriptor.hits_addend.value = 50
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        reply = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=5)
    assert reply.statuses[0].limit_remaining == pytest.approx(10, abs=1)
    assert ask(grpc_port, [("client_id", "carol")], hits=11).overall_code == Response.OVER_LIMIT  # type: ignore[attr-defined]


def test_domains_and_descriptors_are_separate_buckets(grpc_port: int) -> None:
    for _ in range(3):
        ask(grpc_port, [("client_id", "alice")])
    assert ask(grpc_port, [("client_id", "alice")], domain="other").overall_code == Response.OK  # type: ignore[attr-defined]
    with_path = ask(grpc_port, [("client_id", "alice"), ("path", "/x")])
    assert with_path.overall_code == Response.OK  # type: ignore[attr-defined]


@pytest.mark.parametrize("domain", ["", "api"])
def test_malformed_requests_are_invalid_argument(grpc_port: int, domain: str) -> None:
    descriptors: tuple[list[tuple[str, str]], ...] = () if domain else ([("client_id", "x")],)
    with pytest.raises(grpc.RpcError) as caught:
        ask(grpc_port, *descriptors, domain=domain)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_descriptor_type_matches_envoy() -> None:
    # The filter builds RateLimitDescriptor entries; the service receives the same shape.
    fields = {f.name for f in ratelimit_pb2.RateLimitDescriptor.DESCRIPTOR.fields}
    assert {"entries", "hits_addend"} <= fields


class Upstream(http.server.ThreadingHTTPServer):
    hits = 0


class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, Upstream)
        self.server.hits += 1
        body = b"from upstream"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the counts, not the log."""


def envoy_config(listen: int, upstream: int, rls: int) -> str:
    """The README's example config, with this test's ports."""
    template = string.Template((ROOT / "examples" / "envoy.yaml").read_text())
    # A generous timeout: on a loaded test machine a late answer would fail open and
    # hide what is being tested.
    return template.substitute(
        LISTEN_PORT=listen, UPSTREAM_PORT=upstream, OPENCLAW_GRPC_PORT=rls, RLS_TIMEOUT="1s"
    )


def get(port: int, client: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"x-client-id": client})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_real_envoy_answers_429_over_the_limit(grpc_port: int, tmp_path: Path) -> None:
    upstream = Upstream(("127.0.0.1", 0), UpstreamHandler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    listen = free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_config(listen, upstream.server_address[1], grpc_port))
    log = tmp_path / "envoy.log"
    envoy = subprocess.Popen(
        [str(ENVOY), "-c", str(config), "--disable-hot-restart", "-l", "warning",
         "--log-path", str(log)],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert envoy.poll() is None, log.read_text()
            try:
                status = get(listen, "warm-up")
                break
            except OSError:
                assert time.monotonic() < deadline, "envoy did not start listening"
                time.sleep(0.1)
        assert status == 200
        upstream.hits = 0
        assert [get(listen, "alice") for _ in range(5)] == [200, 200, 200, 429, 429]
        assert upstream.hits == 3  # the denied requests never reached the upstream
        assert get(listen, "bob") == 200
        assert upstream.hits == 4
    finally:
        envoy.terminate()
        envoy.wait(timeout=20)
        upstream.shutdown()
        upstream.server_close()


def test_envoy_in_front_of_openclaw_serve(tmp_path: Path) -> None:
    """The operator's set-up: `openclaw serve --grpc-port` with a policy file, Envoy with the
    example config, and SIGTERM at the end."""
    policy = tmp_path / "policy.toml"
    policy.write_bytes(POLICY)
    grpc_port, http_port = free_port(), free_port()
    serve = subprocess.Popen(
        [str(Path(sys.executable).parent / "openclaw"), "serve", "--port", str(http_port),
         "--grpc-port", str(grpc_port), "--policy", str(policy)],
        cwd=tmp_path,  # its telemetry DuckDB file goes there, not into the checkout
    )  # fmt: skip
    upstream = Upstream(("127.0.0.1", 0), UpstreamHandler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    listen = free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_config(listen, upstream.server_address[1], grpc_port))
    envoy = subprocess.Popen(
        [str(ENVOY), "-c", str(config), "--disable-hot-restart", "-l", "warning",
         "--log-path", str(tmp_path / "envoy.log")],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert serve.poll() is None, "openclaw serve exited"
            assert envoy.poll() is None, "envoy exited"
            try:
                # "alice" is tight; wait on another client until both servers answer.
                with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    grpc.channel_ready_future(channel).result(timeout=1)
                get(listen, "warm-up")
                break
            except (OSError, grpc.FutureTimeoutError):
                assert time.monotonic() < deadline, "openclaw serve or envoy did not start"
                time.sleep(0.1)
        upstream.hits = 0
        assert [get(listen, "alice") for _ in range(4)] == [200, 200, 200, 429]
        assert upstream.hits == 3
    finally:
        envoy.terminate()
        envoy.wait(timeout=20)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) in (0, -signal.SIGTERM)
        upstream.shutdown()
        upstream.server_close()
