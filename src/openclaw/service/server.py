"""Running the Rating API under uvicorn: ``openclaw serve``, and a background server for
tests and benchmarks.

uvicorn answers SIGTERM and SIGINT gracefully: it stops accepting connections, lets requests
already being served finish (for up to ``shutdown_grace_s``), then runs the app's shutdown,
which closes the store. SIGHUP reloads the policy file, and the file is also watched for
changes; a bad file keeps the policy in force (the holder logs why).

The telemetry store (``telemetry_url``, a DuckDB file by default) is opened at start-up with
the queue in front of it; at shutdown, after the last request, the queue writes every event it
holds before the store closes, so an event answered 202 is in the store once the process has
exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from openclaw.clock import Clock, monotonic
from openclaw.errors import TelemetryStoreError
from openclaw.features.online import OnlineFeatures
from openclaw.limiter import BucketStore, create_store
from openclaw.policy.learned import LearnedPolicy
from openclaw.policy.static import PolicyHolder
from openclaw.service.app import create_app
from openclaw.service.metrics import DriftCollector
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.batcher import EventObserver, TelemetryBatcher

log = logging.getLogger(__name__)

#: How often the policy file is checked for changes (a stat call, so cheap).
POLICY_POLL_S: Final = 2.0
#: Allocations between two young-generation garbage collections in ``openclaw serve``
#: (CPython's default: 700). A batch of 1000 decisions allocates a few thousand objects that
#: live until its answer is sent; at 700 they survive into the old generation and trigger
#: full collections, each walking every bucket of the memory store: a quarter of the
#: server's time in ``openclaw bench http``'s batch part, against a few % at this value.
GC_GEN0_THRESHOLD: Final = 10_000


def tune_gc() -> None:
    """Garbage collection for a long-running server: what was loaded at start-up (modules,
    the app, the policy) is frozen out of every collection, and young collections run less
    often, so a request's short-lived objects die young instead of being walked again.
    Process-wide, so only ``openclaw serve`` calls it, never the app factory."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


@dataclass(frozen=True, slots=True)
class Built:
    """An app on the embedded (or configured) dependencies, and what it was built from."""

    app: Starlette
    store: BucketStore
    policies: PolicyHolder
    registry: CollectorRegistry
    telemetry: TelemetryBatcher
    #: Per-client rolling features of every accepted event, the model's online input.
    online: OnlineFeatures
    #: policy_mode "model": the learned policy the app serves (``policies`` gives its tier
    #: defaults); None in policy_mode "static".
    learned: LearnedPolicy | None = None

    @property
    def source(self) -> PolicyHolder | LearnedPolicy:
        """What decides: the learned policy, or the static policy file."""
        return self.policies if self.learned is None else self.learned


def open_telemetry(
    settings: Settings, registry: CollectorRegistry, *, observers: Sequence[EventObserver] = ()
) -> TelemetryBatcher:
    """The telemetry store ``telemetry_url`` names, and a started queue in front of it."""
    from openclaw.telemetry.stores import open_event_store

    store = open_event_store(settings.telemetry_url, settings=settings)
    try:
        return TelemetryBatcher.from_settings(
            store, settings, registry, observers=observers
        ).start()
    except BaseException:
        store.close()
        raise


def close_telemetry(batcher: TelemetryBatcher, store: EventStore, *, timeout_s: float) -> None:
    """Write every queued event, then close the store (even when the writes failed: the
    queue's error, which names how many events were lost, is what the log must show)."""
    try:
        batcher.close(timeout_s=timeout_s)
    except TelemetryStoreError:
        log.exception("telemetry: shutdown flush failed")
    finally:
        store.close()


def build(
    settings: Settings,
    *,
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
    wall_clock: Callable[[], float] = time.time,
    policy_poll_s: float = 1.0,
    store_clock: Clock = monotonic,
) -> Built:
    """The app on the stores and policy ``settings`` name, with a registry of its own.

    ``on_shutdown`` runs at shutdown before the telemetry queue is written out and the
    stores close. In policy_mode "model", the learned policy's windows follow ``wall_clock``
    (epoch seconds), looked at least every ``policy_poll_s``. ``store_clock`` is the bucket
    store's (a replay on a virtual clock, ``openclaw demo``, passes its clock to both)."""
    policies = PolicyHolder.from_file(settings.policy_path)
    registry = CollectorRegistry()
    registry.register(DriftCollector(settings.pipeline_dir))
    online = OnlineFeatures(settings)
    learned: LearnedPolicy | None = None
    observers: list[EventObserver] = [online]
    background: list[Callable[[], Awaitable[None]]] = []
    if settings.policy_mode == "model":
        learned = LearnedPolicy.from_settings(
            settings, policies, online, metrics=registry, clock=wall_clock
        )
        observers = list(learned.observers)
        if learned.models.model is None:
            log.warning(
                "policy_mode model: no champion in %s yet; serving the static policy",
                settings.model_registry_path,
            )
        policy = learned

        async def run_learned() -> None:
            await policy.run(poll_s=policy_poll_s)

        background.append(run_learned)
    telemetry = open_telemetry(settings, registry, observers=observers)
    try:
        store = create_store(settings, clock=store_clock)
    except BaseException:
        close_telemetry(telemetry, telemetry.store, timeout_s=settings.shutdown_grace_s)
        raise

    async def close_queue() -> None:
        await asyncio.to_thread(
            close_telemetry, telemetry, telemetry.store, timeout_s=settings.shutdown_grace_s
        )

    app = create_app(
        settings,
        store,
        policies if learned is None else learned,
        registry,
        on_shutdown=[*on_shutdown, close_queue, store.aclose],
        telemetry=telemetry,
        background=background,
    )
    return Built(app, store, policies, registry, telemetry, online, learned)


def uvicorn_config(app: Starlette, settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(max(1, settings.shutdown_grace_s)),
    )


async def _watch_policy(policies: PolicyHolder) -> None:
    while True:
        await asyncio.sleep(POLICY_POLL_S)
        await asyncio.to_thread(policies.reload_if_changed)


async def serve(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT; Envoy's gRPC service too when ``grpc_port`` is set."""
    grpc_servers: list[Any] = []

    async def stop_grpc() -> None:
        # Before the store closes, so ShouldRateLimit calls in flight finish on a live store.
        for grpc_server in grpc_servers:
            await grpc_server.stop(grace=settings.shutdown_grace_s)

    built = build(settings, on_shutdown=[stop_grpc])
    if settings.grpc_port is not None:
        from openclaw.service.grpc import start_grpc_server

        grpc_server, bound = await start_grpc_server(
            built.store,
            lambda: built.source.current,
            host=host,
            port=settings.grpc_port,
            metrics=built.app.state.service.metrics,
        )
        grpc_servers.append(grpc_server)
        log.info("Envoy rate-limit service (gRPC) on %s:%d", host, bound)
    tune_gc()
    server = uvicorn.Server(uvicorn_config(built.app, settings, host=host, port=port))
    loop = asyncio.get_running_loop()
    watcher: asyncio.Task[None] | None = None
    if built.learned is not None:
        # The policy file and the champion, predicted again: off the loop, it runs the model.
        learned = built.learned
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, learned.reload))
    elif built.policies.path is not None:
        loop.add_signal_handler(signal.SIGHUP, built.policies.reload)
    if built.policies.path is not None:
        watcher = loop.create_task(_watch_policy(built.policies))
    try:
        await server.serve()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


class BackgroundServer:
    """A uvicorn server on a loopback port in a thread of its own (tests, benchmarks).

    ``port=0`` picks a free port; :attr:`url` says which once :meth:`start` returns.
    """

    def __init__(
        self, app: Starlette, settings: Settings, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._server = uvicorn.Server(uvicorn_config(app, settings, host=host, port=port))
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)
        self._host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self, *, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        ready = threading.Event()

        def started() -> bool:
            return self._server.started or not self._thread.is_alive()

        for _ in range(int(timeout / 0.01)):
            if started():
                break
            ready.wait(0.01)
        if not self._server.started:
            raise RuntimeError("the server did not start (see its log)")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, *, timeout: float = 15.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
