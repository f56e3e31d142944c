"""Learned limits: the registry's champion predicts every active client's bucket at each window
boundary, a governor scales them by backend health, and the table is swapped whole.

Pieces
    :class:`LearnedTable`   an immutable snapshot implementing the service's ``Policy``: the
                            learned buckets in force, the (governed) static policy for
                            everyone else, and what computed them. The service reads
                            ``LearnedPolicy.current`` once per request, so a decision sees one
                            table, never half of two.
    :class:`LearnedPolicy`  the policy source (``current``, ``reload``): closes windows,
                            predicts, governs and publishes tables; run by its ``run``, a
                            background task of the service, on an injected wall clock.
    :class:`LockedFeatures` the online features behind a lock (see "Threads" below).
    :class:`BackendHealth`  a telemetry observer counting what the governor steers by.

At a boundary (window ``W`` ended ``policy_close_delay_s`` ago, epoch-aligned windows of
``window_s``): the champion alias is checked (``ModelHolder.reload_if_changed``); ``W`` is closed
in the online features; ``prediction_error`` is observed for the clients the table in force had
predicted for ``W`` and that were active in it; ONE batched prediction runs for every client
active in ``W`` (clients with a static override of their own are left to it), the bucket is
clamped to the model bounds (settings ``model_min_*``/``model_max_*``, applied by the predictor)
and then to the client's tier bounds (``[tiers.X.bounds]`` of the policy file); the new table
applies to window ``W + 1``. Clients not active in ``W`` (never seen, or silent) get their tier's
limits from the policy file, as do all clients while the registry has no loadable champion.

Routes: a route with limits of its own in the client's tier keeps them (the model predicts one
bucket per client, not per route); any other route is charged to the learned bucket.

The governor (:class:`~openclaw.policy.governor.GovernorState`, the AIMD core the simulator
runs too): every ``governor_interval_s`` the requests the telemetry reported since the last look
are judged against the SLO (nearest-rank p99 of ``response_time_ms`` above ``slo_p99_ms``, or a
5xx share above ``slo_error_rate``). Unhealthy: clients running above their predicted envelope
(more arrivals so far in the window than ``b + r t``) have their multiplier halved (by
``governor_decrease``); after ``governor_hot_grace`` unhealthy intervals in a row everyone's is.
Healthy: both recover by ``governor_increase`` per interval, up to 1. A multiplier scales
capacity (in whole requests, never below one request unless the bucket was smaller to start
with: ``scale_bucket``) and refill rate, for learned buckets, tier defaults and overrides.

Threads: the telemetry worker thread feeds the observers; the boundary work runs in a worker
thread of the event loop (``asyncio.to_thread``). :class:`LockedFeatures` and
:class:`BackendHealth` each hold a lock, so ``close_until`` never races ``observe``; the lock is
held for the close only (the events of one window), the prediction runs outside it.
``tick`` and ``reload`` are serialised by a lock of their own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from openclaw.errors import CanaryError, RegistryError
from openclaw.features.core import FeatureFrame, duration_us
from openclaw.features.online import OnlineFeatures
from openclaw.limiter.core import BucketParams
from openclaw.model.holder import ModelHolder
from openclaw.model.predictor import BucketPredictor, OutputBounds
from openclaw.model.registry import Registry
from openclaw.policy.base import Policy
from openclaw.policy.governor import GovernorConfig, GovernorState, scale_bucket
from openclaw.policy.rules import Rules, backend_unhealthy, manifest_defaults, serve_buckets
from openclaw.policy.static import ClientRule, PolicyHolder, StaticPolicy, Tier
from openclaw.rollout.canary import CanaryConfig, CanaryController, in_slice
from openclaw.settings import Settings
from openclaw.telemetry.events import EventBatch

LOG: Final = logging.getLogger("openclaw.policy.learned")
US: Final = 1_000_000

#: Where a client's limits come from (``GET /api/v1/params``).
SOURCE_MODEL: Final = "model"
SOURCE_TIER: Final = "tier_default"
SOURCE_OVERRIDE: Final = "static_override"
#: The model's default bucket (its manifest's ``policy_defaults``): no prediction yet.
SOURCE_MODEL_DEFAULT: Final = "model_default"

#: log(predicted / realised): 0 is exact, +0.69 twice the need, -0.69 half of it.
ERROR_BUCKETS: Final = (-4.0, -2.0, -1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)

WallClock = Callable[[], float]
F64 = npt.NDArray[np.float64]
#: The rules around a model's buckets: (the rows predicted for, their (n, 2) buckets) -> served.
Serve = Callable[[FeatureFrame, F64], F64]


def _iso(ts_s: float) -> str:
    return dt.datetime.fromtimestamp(ts_s, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Learned:
    """One client's predicted bucket: after the model bounds and the tier bounds, before the
    governor; the window (index) it applies to, and the model that predicted it."""

    predicted: BucketParams
    window: int
    model_version: str


def scale(params: BucketParams, multiplier: float) -> BucketParams:
    """``params`` under a governor multiplier (module docstring)."""
    if multiplier >= 1.0:
        return params
    return BucketParams(*scale_bucket(params.capacity, params.refill_rate, multiplier))


def _scaled_limits(limits: tuple[BucketParams, ...], m: float) -> tuple[BucketParams, ...]:
    return tuple(scale(p, m) for p in limits)


def scaled_static(static: StaticPolicy, multiplier: float) -> StaticPolicy:
    """Every limit of ``static`` under the governor's multiplier (the same version)."""
    if multiplier >= 1.0:
        return static
    tiers = {
        name: Tier(
            _scaled_limits(t.limits, multiplier),
            {r: _scaled_limits(lim, multiplier) for r, lim in t.routes.items()},
            t.bounds,
        )
        for name, t in static.tiers.items()
    }
    clients = {
        cid: ClientRule(
            rule.tier, None if rule.limits is None else _scaled_limits(rule.limits, multiplier)
        )
        for cid, rule in static.clients.items()
    }
    return replace(static, tiers=tiers, clients=clients)


@dataclass(frozen=True, slots=True)
class LearnedTable:
    """The limits in force: an immutable :class:`Policy` (module docstring)."""

    #: The policy file, governed (scaled by ``multiplier``): tier defaults and overrides.
    static: StaticPolicy
    #: The policy file as written (sources and tier bounds are read from it).
    static_raw: StaticPolicy
    learned: Mapping[str, Learned]
    #: The learned buckets in force (governed), as the store takes them.
    limits: Mapping[str, tuple[BucketParams, ...]]
    #: The model behind the learned buckets; None: no model, the static policy serves.
    model_version: str | None
    #: The window (index) the learned buckets apply to; None before the first boundary.
    window: int | None
    window_s: float
    multiplier: float = 1.0
    hot_multiplier: float = 1.0
    hot: frozenset[str] = frozenset()
    #: The challenger serving a canary's slice (its clients' entries in ``learned`` name
    #: it); None when no canary serves anyone.
    canary_version: str | None = None
    #: The champion's default bucket (its manifest's ``policy_defaults``, governed) for
    #: clients without a prediction or an override of their own; None: the tier's limits.
    default: tuple[BucketParams, ...] | None = None
    #: Clients with limits of their own in the policy file (never learned, never defaulted).
    overrides: frozenset[str] = frozenset()
    #: When the next window's table is due on ``clock`` (the policy's wall clock): its keys
    #: are new buckets, full. None before the first boundary.
    next_window_at: float | None = None
    clock: Callable[[], float] = time.time

    @property
    def name(self) -> str:
        return "static" if self.model_version is None else "model"

    @property
    def version(self) -> str:
        return self.static.version if self.model_version is None else self.model_version

    def limits_for(self, client_id: str, *, route: str | None = None) -> tuple[BucketParams, ...]:
        found = self.limits.get(client_id)
        if found is None:
            found = self.default
            if found is None or client_id in self.overrides:
                return self.static.limits_for(client_id, route=route)
        if route is not None:
            routed = self.static.tiers[self.static.tier_of(client_id)].routes.get(route)
            if routed is not None:
                return routed
        return found

    def tier_of(self, client_id: str) -> str:
        return self.static.tier_of(client_id)

    def bucket_of(self, client_id: str, key: str) -> tuple[str, float | None]:
        """The store key of ``key`` (the client's, or its route's) in the window in force, and
        how long the store need keep it: a model's buckets (learned, or its default) start
        full at every window boundary, as the labels they were trained on do
        (policy/rules.py); so each window has keys of its own, kept for two windows (the window
        and the lag of the boundary work), not until their buckets have refilled: at a quota's
        refill rate that took hours. Other keys: as they are, until full."""
        if self.model_version is None or self.window is None or client_id in self.overrides:
            return key, None
        if self.default is None and client_id not in self.limits:
            return key, None
        return f"{key}@{self.window}", 2.0 * self.window_s

    def window_left(self) -> float | None:
        """Seconds until the buckets ``bucket_of`` keys by window start afresh (at least one:
        a boundary running late is not a boundary passed), or None before the first one."""
        if self.next_window_at is None:
            return None
        return max(self.next_window_at - self.clock(), 1.0)

    def version_for(self, client_id: str) -> str:
        canary = self.canary_version
        if canary is not None:
            entry = self.learned.get(client_id)
            if entry is not None and entry.model_version == canary:
                return canary
        return self.version

    def describe(self, client_id: str, *, route: str | None = None) -> dict[str, Any]:
        """What ``GET /api/v1/params`` adds to the limits: where they come from, the model
        version and the window they were computed for (None when not learned)."""
        learned = self.learned.get(client_id)
        tier = self.static_raw.tiers[self.static_raw.tier_of(client_id)]
        routed = route is not None and route in tier.routes
        if (
            learned is None
            and not routed
            and self.default is not None
            and client_id not in self.overrides
        ):
            return {
                "source": SOURCE_MODEL_DEFAULT,
                "model_version": self.model_version,
                "window": None,
                "predicted": None,
                "governor": self.multiplier,
            }
        if learned is not None and not routed:
            hot = client_id in self.hot
            start = learned.window * self.window_s
            return {
                "source": SOURCE_MODEL,
                "model_version": learned.model_version,
                "window": {"start": _iso(start), "end": _iso(start + self.window_s)},
                "predicted": {
                    "capacity": learned.predicted.capacity,
                    "refill_rate": learned.predicted.refill_rate,
                },
                "governor": min(self.hot_multiplier, self.multiplier) if hot else self.multiplier,
            }
        return describe_static(self.static_raw, client_id) | {"governor": self.multiplier}


def describe_static(static: StaticPolicy, client_id: str) -> dict[str, Any]:
    rule = static.clients.get(client_id)
    own = rule is not None and rule.limits is not None
    return {
        "source": SOURCE_OVERRIDE if own else SOURCE_TIER,
        "model_version": None,
        "window": None,
        "predicted": None,
        "governor": 1.0,
    }


def describe_params(policy: Policy, client_id: str, *, route: str | None = None) -> dict[str, Any]:
    """The params endpoint's provenance fields, for any policy."""
    if isinstance(policy, LearnedTable):
        return policy.describe(client_id, route=route)
    if isinstance(policy, StaticPolicy):
        return describe_static(policy, client_id)
    return {
        "source": policy.name,
        "model_version": None,
        "window": None,
        "predicted": None,
        "governor": 1.0,
    }


# -- observers: fed by the telemetry worker thread ------------------------------------------


class LockedFeatures:
    """:class:`OnlineFeatures` behind a lock: the telemetry thread observes, the boundary
    task closes windows; neither sees the other's half-done state."""

    def __init__(self, features: OnlineFeatures) -> None:
        self.features = features
        self._lock = threading.Lock()

    def observe(self, batch: EventBatch) -> int:
        with self._lock:
            return self.features.observe(batch)

    def close_until(self, now_us: int) -> list[FeatureFrame]:
        with self._lock:
            return self.features.close_until(now_us)


@dataclass(frozen=True, slots=True)
class Health:
    """Requests reported since the last look: all, slower than the SLO, failed (5xx)."""

    done: int
    slow: int
    errors: int


class BackendHealth:
    """Counts what the governor needs from the telemetry: per interval, requests, those slower
    than ``slo_p99_ms`` and 5xx; per window (by event time), each client's arrivals."""

    def __init__(self, *, slo_p99_ms: float, window_s: float) -> None:
        self.slo_ms = slo_p99_ms
        self.window_us = duration_us(window_s)
        self._lock = threading.Lock()
        self._done = self._slow = self._errors = 0
        self._arrivals: dict[int, dict[str, int]] = {}

    def observe(self, batch: EventBatch) -> int:
        n = len(batch)
        if n == 0:
            return 0
        # NaN (no response time known) compares False: not slow.
        slow = int(np.count_nonzero(batch.response_time_ms > self.slo_ms))
        status = batch.status_code
        errors = int(np.count_nonzero((status >= 500) & (status <= 599)))
        win = batch.ts_us // self.window_us
        counted: list[tuple[int, list[str], list[int]]] = []
        for w in np.unique(win).tolist():
            clients, counts = np.unique(batch.client_id[win == w], return_counts=True)
            counted.append((int(w), clients.tolist(), counts.tolist()))
        with self._lock:
            self._done += n
            self._slow += slow
            self._errors += errors
            for w, clients_w, counts_w in counted:
                seen = self._arrivals.setdefault(w, {})
                for client, count in zip(clients_w, counts_w, strict=True):
                    seen[client] = seen.get(client, 0) + count
            # Only the current window (and a late previous one) is ever asked for; without
            # this, a healthy backend (arrivals() never called) would keep every window.
            newest = max(self._arrivals)
            for w in [w for w in self._arrivals if w < newest - 1]:
                del self._arrivals[w]
        return n

    def take(self) -> Health:
        """The counts since the last take, and start again."""
        with self._lock:
            health = Health(self._done, self._slow, self._errors)
            self._done = self._slow = self._errors = 0
        return health

    def arrivals(self, window: int) -> dict[str, int]:
        """Each client's arrivals in ``window`` so far; windows before it are forgotten."""
        with self._lock:
            for w in [w for w in self._arrivals if w < window]:
                del self._arrivals[w]
            return dict(self._arrivals.get(window, {}))


# -- the policy source ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LearnedMetrics:
    prediction_error: Histogram
    prediction_failures: Counter
    windows: Counter
    multiplier: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> LearnedMetrics:
        multiplier = Gauge(
            "openclaw_governor_multiplier",
            "The governor's multiplier: scope all (every bucket) and hot (clients above their "
            "predicted envelope).",
            ["scope"],
            registry=registry,
        )
        multiplier.labels("all").set(1.0)
        multiplier.labels("hot").set(1.0)
        return cls(
            prediction_error=Histogram(
                "openclaw_prediction_error",
                "Per closed window and client the model had predicted for and that was active "
                "in it: log(predicted / realised), param capacity: the predicted capacity "
                "against the window's b*(r*), param refill_rate: the predicted rate against "
                "r*. Predicted: after the model and tier bounds, before the governor. Below 0: "
                "under-allocated.",
                ["model_version", "param"],
                buckets=ERROR_BUCKETS,
                registry=registry,
            ),
            prediction_failures=Counter(
                "openclaw_prediction_failures",
                "Boundaries whose batched prediction failed (tier defaults served instead).",
                registry=registry,
            ),
            windows=Counter(
                "openclaw_policy_windows",
                "Window boundaries the learned policy has processed.",
                registry=registry,
            ),
            multiplier=multiplier,
        )


def governor_config(settings: Settings) -> GovernorConfig:
    return GovernorConfig(
        interval_s=settings.governor_interval_s,
        decrease=settings.governor_decrease,
        increase=settings.governor_increase,
        floor=settings.governor_floor,
        hot_grace=settings.governor_hot_grace,
    )


class LearnedPolicy:
    """The learned policy source (module docstring). Also a :class:`Policy` itself, delegating
    to the table in force; the service reads :attr:`current` once per request instead."""

    def __init__(
        self,
        static: PolicyHolder,
        models: ModelHolder,
        features: LockedFeatures,
        *,
        settings: Settings,
        metrics: CollectorRegistry,
        health: BackendHealth | None = None,
        canary: CanaryController | None = None,
        clock: WallClock = time.time,
        logger: logging.Logger = LOG,
    ) -> None:
        self.static = static
        self.models = models
        self.features = features
        self.health = health
        self.canary = canary
        self.settings = settings
        self._clock = clock
        self._log = logger
        self.window_s = settings.window_s
        self.window_us = duration_us(settings.window_s)
        self.close_delay_s = settings.policy_close_delay_s
        self.metrics = LearnedMetrics.register(metrics)
        self.governor = GovernorState(
            governor_config(settings), slo_error_rate=settings.slo_error_rate
        )
        self._lock = threading.Lock()
        self._frame: FeatureFrame | None = None
        self._frame_window: int | None = None
        self._learned: dict[str, Learned] = {}
        # Each model's predictions for the window in force: the champion's, and a canary's
        # challenger's (metered always, served to its slice only); _learned merges them.
        self._champion_learned: dict[str, Learned] = {}
        self._challenger_learned: dict[str, Learned] = {}
        #: Each client's highest r* in a closed window so far: "within its history".
        self._peaks: dict[str, float] = {}
        self._canary_version: str | None = None
        #: Whether the last closed window broke the SLO (policy/rules.py: the tighter default).
        self._unhealthy = False
        self._hot: frozenset[str] = frozenset()
        self._use_static(self._static_now())
        now = clock()
        # Windows that ended before start-up are not ours to predict from (nothing observed).
        self._closed_through = self._last_closable(now)
        self._next_governor = now + settings.governor_interval_s
        self.models.reload_if_changed()
        self._table = self._build()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        static: PolicyHolder,
        online: OnlineFeatures,
        *,
        metrics: CollectorRegistry,
        clock: WallClock = time.time,
    ) -> LearnedPolicy:
        models = ModelHolder(
            Registry(settings.model_registry_path),
            metrics=metrics,
            bounds=OutputBounds.from_settings(settings),
        )
        health = (
            BackendHealth(slo_p99_ms=settings.slo_p99_ms, window_s=settings.window_s)
            if settings.governor_enabled
            else None
        )
        canary = CanaryController(
            models.registry,
            config=CanaryConfig.from_settings(settings),
            metrics=metrics,
            bounds=models.bounds,
            auto_start=settings.canary_auto_start,
        )
        return cls(
            static,
            models,
            LockedFeatures(online),
            settings=settings,
            metrics=metrics,
            health=health,
            canary=canary,
            clock=clock,
        )

    @property
    def observers(self) -> list[LockedFeatures | BackendHealth]:
        """What the telemetry queue must feed (instead of the bare online features)."""
        return [self.features] if self.health is None else [self.features, self.health]

    # -- Policy, delegated ----------------------------------------------------------------

    @property
    def current(self) -> LearnedTable:
        return self._table

    @property
    def name(self) -> str:
        return self._table.name

    @property
    def version(self) -> str:
        return self._table.version

    def limits_for(self, client_id: str, *, route: str | None = None) -> tuple[BucketParams, ...]:
        return self._table.limits_for(client_id, route=route)

    def tier_of(self, client_id: str) -> str:
        return self._table.tier_of(client_id)

    def version_for(self, client_id: str) -> str:
        return self._table.version_for(client_id)

    # -- time -----------------------------------------------------------------------------

    def _last_closable(self, now: float) -> int:
        """The latest window that ended at least ``close_delay_s`` before ``now``."""
        return math.floor((now - self.close_delay_s) / self.window_s) - 1

    def due_in(self) -> float:
        """Seconds until the next boundary or governor interval is due (>= 0)."""
        now = self._clock()
        boundary = (self._closed_through + 2) * self.window_s + self.close_delay_s
        due = boundary - now
        if self.health is not None:
            due = min(due, self._next_governor - now)
        return max(due, 0.0)

    def tick(self) -> None:
        """Do whatever is due: close windows and predict, judge backend health."""
        with self._lock:
            now = self._clock()
            last = self._last_closable(now)
            if last > self._closed_through:
                self._boundary(last)
            elif self._static_now() is not self._static_used:
                self._predict()  # the policy file changed: new tiers, new tier bounds
            if self.health is not None and now >= self._next_governor:
                self._govern(now)
                # Intervals missed (a stalled loop) are not judged after the fact.
                steps = math.floor((now - self._next_governor) / self.settings.governor_interval_s)
                self._next_governor += (steps + 1) * self.settings.governor_interval_s
            if self.canary is not None:
                self._canary_tick(now)

    def _canary_tick(self, now: float) -> None:
        canary = self.canary
        assert canary is not None
        was = canary.status
        canary.watch_alias(champion=self.models.version, now=now)
        status = canary.status
        if status is was:
            status = canary.analyse(now)
            if status is None or (status.phase == "shadow" and status.active):
                return  # nothing served changes
        if status is not None and status.phase == "promoted":
            self.models.reload_if_changed()  # the alias moved: serve it to everyone now
        # A canary started (shadow predictions from the last window on), a new weight, or
        # the canary's end.
        self._predict()

    async def run(self, *, poll_s: float = 1.0) -> None:
        """The service's background task: tick when due (and at least every ``poll_s``,
        so a clock that jumps, or a fake one in tests, is followed)."""
        while True:
            await asyncio.sleep(min(self.due_in(), poll_s))
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # the task must outlive any one bad boundary
                self._log.exception("learned policy: a boundary failed; the table in force stays")

    def reload(self) -> str | None:
        """The admin reload: the policy file (when there is one) and the champion, then the
        last window's predictions again with both. None when everything loaded, else why."""
        problems: list[str] = []
        with self._lock:
            if self.static.path is not None:
                reason = self.static.reload()
                if reason is not None:
                    problems.append(reason)
            self.models.reload_if_changed()
            try:
                champion = self.models.registry.alias(self.models.alias)
            except RegistryError as exc:
                problems.append(str(exc))
                champion = None
            if champion is not None and champion != self.models.version:
                problems.append(
                    f"{self.models.alias} {champion} could not be loaded (see the log and "
                    f"openclaw_model_load_failures_total); still serving "
                    f"{self.models.version or 'the static policy'}"
                )
            self._predict()
        return "; ".join(problems) or None

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: what the learned policy serves, and why when it is the static one."""
        table = self._table
        serving = self.models.version
        body: dict[str, Any] = {
            "mode": "model",
            "registry": str(self.models.registry.root),
            "serving": serving,
            "clients": len(table.learned),
            "window": None if table.window is None else _iso(table.window * self.window_s),
            "governor": {"all": self.governor.m_all, "hot": self.governor.hot},
        }
        if serving is None:
            body["detail"] = (
                f"no champion model could be loaded from {self.models.registry.root}: "
                "serving the static policy"
            )
        canary = None if self.canary is None else self.canary.status
        body["canary"] = None if canary is None else canary.to_json()
        return body

    # -- the canary's admin actions -----------------------------------------------------------

    def _canary(self) -> CanaryController:
        if self.canary is None:
            raise CanaryError("this service runs no model canary")
        return self.canary

    def canary_status(self) -> dict[str, Any]:
        canary = self._canary()
        status = canary.status
        return {
            "champion": self.models.version,
            "canary": None if status is None else status.to_json(),
            "config": asdict(canary.config),
        }

    def start_canary(self, version: str | None, *, reason: str) -> dict[str, Any]:
        """Start a canary of ``version`` (None: the challenger alias); CanaryError if not."""
        canary = self._canary()
        with self._lock:
            canary.start(version, champion=self.models.version, now=self._clock(), reason=reason)
            self._predict()
        return self.canary_status()

    def abort_canary(self, *, reason: str) -> dict[str, Any]:
        canary = self._canary()
        with self._lock:
            canary.abort(now=self._clock(), reason=reason or "aborted by an operator")
            self._predict()
        return self.canary_status()

    # -- the work, under self._lock ---------------------------------------------------------

    def _use_static(self, static: StaticPolicy) -> None:
        """The policy file the tables are built from, and what is derived from it (once per
        prediction, not at every governor rebuild)."""
        self._static_used = static
        self._overrides = frozenset(
            c for c, rule in static.clients.items() if rule.limits is not None
        )

    def _static_now(self) -> StaticPolicy:
        policy = self.static.current
        if not isinstance(policy, StaticPolicy):
            raise TypeError(f"the learned policy needs a static policy file, got {policy.name!r}")
        return policy

    def _boundary(self, window: int) -> None:
        self.models.reload_if_changed()
        frames = self.features.close_until((window + 1) * self.window_us)
        self._closed_through = window
        frame = frames[-1] if frames else None
        if frame is not None and (
            not len(frame) or frame.window_start_us[0] // self.window_us != window
        ):
            frame = None  # no client was active in the window that just ended
        if frame is not None:
            self._observe_error(frame, window)
            if self.canary is not None:
                self._observe_health(frame, window)
            self._unhealthy = backend_unhealthy(
                float(frame.column("global_p99_ms")[0]),
                float(frame.column("global_5xx_frac")[0]),
                slo_p99_ms=self.settings.slo_p99_ms,
                slo_error_rate=self.settings.slo_error_rate,
            )
        self._frame = frame
        self._frame_window = window
        self._predict()
        self.metrics.windows.inc()

    def _observe_error(self, frame: FeatureFrame, window: int) -> None:
        # Every model that predicted the window is metered, a shadow challenger included.
        tables = [t for t in (self._champion_learned, self._challenger_learned) if t]
        if not tables:
            return
        by_version: dict[str, tuple[list[float], list[float], list[float], list[float]]] = {}
        for client, r, b in zip(
            frame.client_id.tolist(), frame.r_star.tolist(), frame.b_star.tolist(), strict=True
        ):
            for learned in tables:
                entry = learned.get(client)
                if entry is None or entry.window != window:
                    continue
                cap, rate, bs, rs = by_version.setdefault(entry.model_version, ([], [], [], []))
                cap.append(entry.predicted.capacity)
                rate.append(entry.predicted.refill_rate)
                bs.append(b)
                rs.append(r)
        tiny = 1e-9  # a zero prediction is an error of -20, not -inf
        for version, (cap, rate, bs, rs) in by_version.items():
            for param, pred, real in (("capacity", cap, bs), ("refill_rate", rate, rs)):
                errors = np.log(np.maximum(pred, tiny) / np.maximum(real, tiny))
                child = self.metrics.prediction_error.labels(version, param)
                for e in errors.tolist():
                    child.observe(e)

    def _observe_health(self, frame: FeatureFrame, window: int) -> None:
        """The canary's model health for ``window`` (the models' predictions for it against
        what the clients did), then the clients' peaks take the window in."""
        assert self.canary is not None
        predictions: dict[str, dict[str, tuple[float, float]]] = {}
        for learned in (self._champion_learned, self._challenger_learned):
            for client, entry in learned.items():
                if entry.window == window:
                    predictions.setdefault(entry.model_version, {})[client] = (
                        entry.predicted.capacity,
                        entry.predicted.refill_rate,
                    )
        self.canary.observe_window(frame, predictions, self._peaks, window_s=self.window_s)
        peaks = self._peaks
        for client, r in zip(frame.client_id.tolist(), frame.r_star.tolist(), strict=True):
            if r > peaks.get(client, -1.0):
                peaks[client] = r

    def _default_of(self, model: BucketPredictor | None) -> tuple[float, float] | None:
        """The default bucket ``model`` carries for the window in force (policy/rules.py)."""
        if model is None:
            return None
        try:
            defaults = manifest_defaults(model)
        except ValueError as exc:
            self._log.warning("learned policy: %s: %s; tier defaults serve", model.version, exc)
            return None
        if defaults is None:
            return None
        return defaults[1] if self._unhealthy else defaults[0]

    def _predict_with(self, model: BucketPredictor, static: StaticPolicy) -> dict[str, Learned]:
        frame = self._frame
        if frame is None or self._frame_window is None:
            return {}
        default = self._default_of(model)
        serve: Serve | None = None
        if default is not None:
            unhealthy, window_s = self._unhealthy, self.window_s
            horizon_s = self.settings.label_horizon_s

            def serve(rows: FeatureFrame, out: F64) -> F64:
                cap, rate = serve_buckets(
                    np.maximum(out[:, 0], 1.0),
                    np.maximum(out[:, 1], 1.0 / horizon_s),
                    refused=rows.column("frac_429"),
                    n_requests=rows.column("n_requests"),
                    default=default,
                    window_s=window_s,
                    unhealthy=unhealthy,
                    rules=Rules(),
                )
                return np.column_stack([cap, rate])

        try:
            return predict_table(model, frame, static, window=self._frame_window + 1, serve=serve)
        except Exception:
            self.metrics.prediction_failures.inc()
            self._log.exception(
                "learned policy: predicting window %d with %s failed; tier defaults serve",
                self._frame_window + 1,
                model.version,
            )
            return {}

    def _predict(self) -> None:
        static = self._static_now()
        self._use_static(static)
        model = self.models.model
        champion = {} if model is None else self._predict_with(model, static)
        canary = self.canary
        challenger_model = None if canary is None else canary.challenger
        challenger = (
            {} if challenger_model is None else self._predict_with(challenger_model, static)
        )
        learned = champion
        weight = 0.0 if canary is None else canary.weight
        if weight > 0 and challenger:
            learned = dict(champion)
            for client, entry in challenger.items():
                if in_slice(client, weight):
                    learned[client] = entry
        self._champion_learned = champion
        self._challenger_learned = challenger
        self._canary_version = (
            challenger_model.version if weight > 0 and challenger_model is not None else None
        )
        self._learned = learned
        self._hot = frozenset(c for c in self._hot if c in learned)
        self._table = self._build()

    def _govern(self, now: float) -> None:
        assert self.health is not None
        health = self.health.take()
        changed = self.governor.observe(health.done, health.slow, health.errors)
        hot = self._hot_clients(now) if self.governor.m_hot < 1.0 else frozenset()
        self.metrics.multiplier.labels("all").set(self.governor.m_all)
        self.metrics.multiplier.labels("hot").set(self.governor.hot)
        if changed or hot != self._hot:
            if changed:
                self._log.info(
                    "governor: %d requests, %d slow, %d errors: multiplier %.3f, hot %.3f (%d hot)",
                    health.done,
                    health.slow,
                    health.errors,
                    self.governor.m_all,
                    self.governor.hot,
                    len(hot),
                )
            self._hot = hot
            self._table = self._build()

    def _hot_clients(self, now: float) -> frozenset[str]:
        """Clients whose arrivals so far in the window in progress exceed their predicted
        envelope ``b + r t``."""
        assert self.health is not None
        window = math.floor(now / self.window_s)
        elapsed = min(max(now - window * self.window_s, 0.0), self.window_s)
        learned = self._learned
        hot = []
        for client, n in self.health.arrivals(window).items():
            entry = learned.get(client)
            if (
                entry is not None
                and n > entry.predicted.capacity + entry.predicted.refill_rate * elapsed
            ):
                hot.append(client)
        return frozenset(hot)

    def _build(self) -> LearnedTable:
        static = self._static_used
        m_all = self.governor.m_all
        m_hot = self.governor.hot
        hot = self._hot
        limits = {
            client: (scale(entry.predicted, m_hot if client in hot else m_all),)
            for client, entry in self._learned.items()
        }
        default = self._default_of(self.models.model)
        return LearnedTable(
            static=scaled_static(static, m_all),
            static_raw=static,
            learned=self._learned,
            limits=limits,
            model_version=self.models.version,
            window=None if self._frame_window is None else self._frame_window + 1,
            window_s=self.window_s,
            multiplier=m_all,
            hot_multiplier=m_hot,
            hot=hot,
            canary_version=self._canary_version,
            default=None if default is None else (scale(BucketParams(*default), m_all),),
            overrides=self._overrides,
            next_window_at=None
            if self._frame_window is None
            else (self._frame_window + 2) * self.window_s + self.close_delay_s,
            clock=self._clock,
        )


def predict_table(
    model: BucketPredictor,
    frame: FeatureFrame,
    static: StaticPolicy,
    *,
    window: int,
    serve: Serve | None = None,
) -> dict[str, Learned]:
    """One batched prediction for the clients of ``frame`` (those without a static override),
    through ``serve`` (the rules of policy/rules.py, when the model carries its defaults),
    clipped to their tier bounds, for ``window``."""
    clients = frame.client_id.tolist()
    keep = [
        i
        for i, c in enumerate(clients)
        if (rule := static.clients.get(c)) is None or rule.limits is None
    ]
    if not keep:
        return {}
    if len(keep) != len(clients):
        frame = frame.take(np.asarray(keep, dtype=np.intp))
        clients = [clients[i] for i in keep]
    out = model.predict_batch(frame)  # (n, 2), finite, within the model bounds
    if serve is not None:
        out = serve(frame, out)
    tiers = [static.tier_of(c) for c in clients]
    names = sorted(set(tiers))
    index = {name: i for i, name in enumerate(names)}
    bounds = [static.tiers[name].bounds for name in names]
    low = np.array([[b.min_capacity, b.min_refill_rate] for b in bounds])
    high = np.array([[b.max_capacity, b.max_refill_rate] for b in bounds])
    which = np.fromiter((index[t] for t in tiers), np.intp, len(tiers))
    np.clip(out, low[which], high[which], out=out)
    version = model.version
    return {
        client: Learned(BucketParams(cap, rate), window, version)
        for client, (cap, rate) in zip(clients, out.tolist(), strict=True)
    }
