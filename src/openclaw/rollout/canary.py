"""The model canary inside the service: shadow, then a growing slice of clients, then promotion
or rollback, judged on the service's own metrics.

The life of a canary (DESIGN.md "Rollout", the shape Flagger gives a canary Deployment):

``shadow``      the challenger predicts every active client's bucket at each window boundary
                beside the champion; its predictions are metered (``prediction_error`` and the
                model-health counters under its version) and never enforced.
``canary``      after ``shadow_intervals`` passing analyses, a stable-hashed slice of clients
                (``weight`` percent of the hash space, :func:`in_slice`) is served the
                challenger's buckets; each passing analysis adds ``step_weight``, up to
                ``max_weight``.
``promoted``    an analysis passing at ``max_weight`` promotes the challenger to champion in
                the registry (audit logged); the service then serves it to everyone.
``rolled_back`` failed analyses reached ``threshold`` (counted in total over the canary's life,
                not in a row: a model that fails every other interval must not creep up). The
                challenger alias is cleared, so the same version is not started again; the
                champion never stopped serving everyone outside the slice.
``aborted``     by an operator (admin API, ``openclaw canary abort``).

One analysis per ``interval_s``. Its checks (:func:`judge`):

* ``latency_p99``: the p99 of ``openclaw_decision_latency_seconds`` over the interval (the
  histogram's increase, interpolated in its buckets the way PromQL's ``histogram_quantile``
  does) at most ``max_latency_s`` (0.2 s). The service as a whole: both models decide in one
  process, and a challenger that slows the service (its predictions run in it) slows everyone.
* ``error_rate``: requests answered 503 for a store error, over all decisions, at most
  ``max_error_rate``.
* ``underflow_rate``: of the clients *within their history* (active in a window and needing no
  more than the most they ever needed in an earlier window seen since start-up: traffic the
  model had reason to expect), the share whose challenger bucket for that window could not
  admit what they sent (the window's envelope ``b*`` at the predicted refill rate above the
  predicted capacity), at most ``max_underflow_rate``. Judged from the realised traffic, so a
  shadow model is judged without ever denying anyone.
* ``prediction_error``: the median over the same clients of ``|log(a_pred / a_real)|``, where
  ``a = capacity + refill_rate * window_s`` is what a bucket admits in a window, at most
  ``max_prediction_error``.

No data is a failure: an interval without decisions, or without a client within its history
for the challenger, fails the checks that have nothing to judge (a canary must prove itself,
not pass by silence).

Replicas: every replica of the service runs the canary on its own metrics, and they share the
registry. Starting a canary names the version the ``challenger`` alias, which the others follow
(``canary_auto_start``); the first replica to promote or roll back moves the aliases, and the
others end theirs as the aliases say (:func:`ended_elsewhere`): no replica promotes a version
another has rolled back.

The state transitions are pure (:func:`start`, :func:`advance`, :func:`abort`); the controller
(:class:`CanaryController`) is the shell the learned policy drives under its lock, with the
registry and the metrics registry injected.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge

from openclaw.errors import ArtifactError, CanaryError, RegistryError
from openclaw.features.core import FeatureFrame
from openclaw.model.dataset import chord_bound, knots_of
from openclaw.model.predictor import BucketPredictor, OutputBounds, load_predictor
from openclaw.model.registry import Registry
from openclaw.settings import Settings

LOG: Final = logging.getLogger("openclaw.rollout.canary")

Phase = Literal["shadow", "canary", "promoted", "rolled_back", "aborted"]
PHASES: Final[tuple[Phase, ...]] = ("shadow", "canary", "promoted", "rolled_back", "aborted")
ACTIVE: Final = frozenset({"shadow", "canary"})
#: The hash space a weight (percent) is a share of: weights have 0.01 % resolution.
SLOTS: Final = 10_000
LATENCY_METRIC: Final = "openclaw_decision_latency_seconds"
DECISIONS_METRIC: Final = "openclaw_decisions"
STORE_ERRORS_METRIC: Final = "openclaw_store_errors"

F64 = npt.NDArray[np.float64]


def in_slice(client_id: str, weight: float) -> bool:
    """Whether ``client_id`` is in a canary of ``weight`` percent. Stable across processes and
    restarts (CRC-32 of the id, not Python's salted ``hash``), and monotone: a client in the
    slice at a weight stays in it at every higher weight."""
    return zlib.crc32(client_id.encode("utf-8", "surrogatepass")) % SLOTS < weight * SLOTS / 100


# -- the pure core ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    interval_s: float = 300.0
    shadow_intervals: int = 2
    step_weight: float = 10.0
    max_weight: float = 50.0
    threshold: int = 5
    max_latency_s: float = 0.2
    max_error_rate: float = 0.01
    max_underflow_rate: float = 0.02
    max_prediction_error: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> CanaryConfig:
        return cls(
            interval_s=settings.canary_interval_s,
            shadow_intervals=settings.canary_shadow_intervals,
            step_weight=settings.canary_step_weight,
            max_weight=settings.canary_max_weight,
            threshold=settings.canary_threshold,
            max_latency_s=settings.canary_max_latency_s,
            max_error_rate=settings.canary_max_error_rate,
            max_underflow_rate=settings.canary_max_underflow_rate,
            max_prediction_error=settings.canary_max_prediction_error,
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """What one interval saw. None: nothing to judge (which fails the check)."""

    decisions: float
    latency_p99_s: float | None
    error_rate: float | None
    #: Challenger-predicted clients within their history, and how many of them underflowed.
    clients: int
    underflows: int
    prediction_error: float | None

    @property
    def underflow_rate(self) -> float | None:
        return self.underflows / self.clients if self.clients else None


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    value: float | None
    limit: float
    passed: bool

    def describe(self) -> str:
        if self.value is None:
            return f"{self.name}: no data (a failure)"
        verdict = "ok" if self.passed else "over"
        return f"{self.name} {self.value:.4g} (limit {self.limit:g}): {verdict}"


def _check(name: str, value: float | None, limit: float) -> Check:
    return Check(name, value, limit, value is not None and math.isfinite(value) and value <= limit)


def judge(observation: Observation, config: CanaryConfig) -> tuple[Check, ...]:
    """The checks of one interval (module docstring)."""
    return (
        _check("latency_p99", observation.latency_p99_s, config.max_latency_s),
        _check("error_rate", observation.error_rate, config.max_error_rate),
        _check("underflow_rate", observation.underflow_rate, config.max_underflow_rate),
        _check("prediction_error", observation.prediction_error, config.max_prediction_error),
    )


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a canary's history."""

    at: float
    phase: Phase
    weight: float
    failed_checks: int
    note: str


@dataclass(frozen=True, slots=True)
class CanaryStatus:
    version: str
    champion: str | None
    phase: Phase
    weight: float
    failed_checks: int
    #: Analyses run, and those passed while in shadow.
    analyses: int
    shadow_passed: int
    started_at: float
    updated_at: float
    reason: str
    checks: tuple[Check, ...] = ()
    history: tuple[Event, ...] = ()

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["active"] = self.active
        return body


def _moved(status: CanaryStatus, now: float, note: str, **changes: Any) -> CanaryStatus:
    new = replace(status, updated_at=now, **changes)
    event = Event(now, new.phase, new.weight, new.failed_checks, note)
    return replace(new, history=(*status.history, event))


def start(version: str, champion: str | None, *, now: float, reason: str) -> CanaryStatus:
    status = CanaryStatus(
        version=version,
        champion=champion,
        phase="shadow",
        weight=0.0,
        failed_checks=0,
        analyses=0,
        shadow_passed=0,
        started_at=now,
        updated_at=now,
        reason=reason,
    )
    return _moved(status, now, f"started: {reason}" if reason else "started")


def advance(
    status: CanaryStatus, checks: tuple[Check, ...], config: CanaryConfig, *, now: float
) -> CanaryStatus:
    """The state after one analysis (module docstring)."""
    if not status.active:
        return status
    changes: dict[str, Any] = {"analyses": status.analyses + 1, "checks": checks}
    failed = [c for c in checks if not c.passed]
    if failed:
        count = changes["failed_checks"] = status.failed_checks + 1
        why = "; ".join(c.describe() for c in failed)
        if count >= config.threshold:
            changes |= {"phase": "rolled_back", "weight": 0.0}
            note = f"rolled back after {count} failed analyses: {why}"
        else:
            note = f"analysis failed ({count}/{config.threshold}): {why}"
    elif status.phase == "shadow":
        passed = changes["shadow_passed"] = status.shadow_passed + 1
        if passed < config.shadow_intervals:
            note = f"shadow analysis passed ({passed}/{config.shadow_intervals})"
        else:
            weight = min(config.step_weight, config.max_weight)
            changes |= {"phase": "canary", "weight": weight}
            note = f"shadow passed: canary at {weight:g}%"
    elif status.weight >= config.max_weight:
        changes["phase"] = "promoted"
        note = f"analysis passed at {status.weight:g}%: promoted"
    else:
        weight = changes["weight"] = min(status.weight + config.step_weight, config.max_weight)
        note = f"analysis passed: weight {weight:g}%"
    return _moved(status, now, note, **changes)


def ended_elsewhere(status: CanaryStatus, *, now: float, champion: str | None) -> CanaryStatus:
    """The end another replica (or an operator, through the registry) gave the canary: the
    champion alias names the challenger (promoted), or the challenger alias no longer does
    (rolled back or aborted: this replica aborts too)."""
    if not status.active:
        return status
    if champion == status.version:
        return _moved(status, now, "promoted in the registry (another replica)", phase="promoted")
    return _moved(
        status,
        now,
        "aborted: the challenger alias no longer names it (another replica, or by hand)",
        phase="aborted",
        weight=0.0,
    )


def abort(status: CanaryStatus, *, now: float, reason: str) -> CanaryStatus:
    if not status.active:
        return status
    return _moved(
        status, now, f"aborted: {reason}" if reason else "aborted", phase="aborted", weight=0.0
    )


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram ``(upper bound, count)`` (``+Inf`` last),
    interpolated linearly in the bucket it falls in, as PromQL's ``histogram_quantile`` does;
    None when it counted nothing."""
    points = sorted(buckets)
    if not points or points[-1][1] <= 0:
        return None
    total = points[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in points:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # above the highest finite bound: PromQL returns that bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


# -- what the controller reads -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative service counters at one moment (the analysis takes differences)."""

    latency: tuple[tuple[float, float], ...]
    decisions: float
    store_errors: float

    def since(self, before: Totals) -> tuple[tuple[tuple[float, float], ...], float, float]:
        old = dict(before.latency)
        latency = tuple((le, count - old.get(le, 0.0)) for le, count in self.latency)
        return latency, self.decisions - before.decisions, self.store_errors - before.store_errors


def read_totals(registry: CollectorRegistry) -> Totals:
    """The service's latency histogram (all endpoints summed), decisions and store errors."""
    latency: dict[float, float] = {}
    decisions = errors = 0.0
    for family in registry.collect():
        if family.name == LATENCY_METRIC:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    latency[le] = latency.get(le, 0.0) + sample.value
        elif family.name == DECISIONS_METRIC:
            decisions += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == STORE_ERRORS_METRIC:
            errors += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return Totals(tuple(sorted(latency.items())), decisions, errors)


@dataclass(slots=True)
class _Health:
    """Model health gathered at the window boundaries of the interval in progress."""

    clients: int = 0
    underflows: int = 0
    errors: list[float] = field(default_factory=list)


def judge_window(
    frame: FeatureFrame,
    predicted: Mapping[str, tuple[float, float]],
    peaks: Mapping[str, float],
    *,
    window_s: float,
) -> tuple[int, int, list[float]]:
    """For one closed window: of the clients in ``frame`` with a prediction and within their
    history (``r*`` at most their earlier peak), how many there are, how many the predicted
    bucket could not serve, and each one's ``|log(a_pred / a_real)|`` (module docstring)."""
    clients = frame.client_id.tolist()
    rows = [
        i
        for i, c in enumerate(clients)
        if c in predicted and c in peaks and frame.r_star[i] <= peaks[c]
    ]
    if not rows:
        return 0, 0, []
    index = np.asarray(rows, dtype=np.intp)
    pred = np.array([predicted[clients[i]] for i in rows], dtype=np.float64)
    capacity, rate = pred[:, 0], pred[:, 1]
    knot_rates, knot_caps = knots_of(frame, index)
    need = chord_bound(knot_rates, knot_caps, rate[:, None])[:, 0]
    # One part in a million of slack: the envelope and the prediction are floats.
    under = int(np.count_nonzero(need > capacity * (1 + 1e-6) + 1e-9))
    admitted = capacity + rate * window_s
    realised = frame.b_star[index] + frame.r_star[index] * window_s
    tiny = 1e-9
    errors = np.abs(np.log(np.maximum(admitted, tiny) / np.maximum(realised, tiny)))
    return len(rows), under, errors.tolist()


# -- the shell -------------------------------------------------------------------------------

Loader = Callable[[Registry, str, OutputBounds], BucketPredictor]


def _load(registry: Registry, version: str, bounds: OutputBounds) -> BucketPredictor:
    return load_predictor(registry.path_of(version), bounds=bounds)


class CanaryController:
    """The canary's state, the challenger model and its analysis (module docstring).

    Not thread-safe by itself: the learned policy calls it under its own lock. ``status`` and
    ``challenger`` are single references, safe to read from any thread.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        config: CanaryConfig,
        metrics: CollectorRegistry,
        bounds: OutputBounds,
        auto_start: bool = True,
        logger: logging.Logger = LOG,
        loader: Loader = _load,
    ) -> None:
        self.registry = registry
        self.config = config
        self.bounds = bounds
        self.auto_start = auto_start
        self._metrics_registry = metrics
        self._log = logger
        self._loader = loader
        self.status: CanaryStatus | None = None
        self.challenger: BucketPredictor | None = None
        self._health = _Health()
        self._totals: Totals | None = None
        self._next_analysis = math.inf
        #: The challenger alias value already acted on (started, refused or finished).
        self._seen_alias: str | None = None
        #: The alias file's stamp at the last look: unchanged, the aliases say nothing new.
        self._alias_stamp: tuple[int, int, int] | None = None
        self.phase_gauge = Gauge(
            "openclaw_canary_phase",
            "1 for the canary's phase (none when no canary ever ran).",
            ["phase"],
            registry=metrics,
        )
        for phase in ("none", *PHASES):
            self.phase_gauge.labels(phase).set(1.0 if phase == "none" else 0.0)
        self.weight_gauge = Gauge(
            "openclaw_canary_weight",
            "Percent of clients served by the challenger (0 in shadow).",
            registry=metrics,
        )
        self.failed_gauge = Gauge(
            "openclaw_canary_failed_checks",
            "Failed analyses of the canary in progress (rollback at the threshold).",
            registry=metrics,
        )
        self.checks = Counter(
            "openclaw_canary_checks",
            "Canary checks by name and result (pass, fail).",
            ["check", "result"],
            registry=metrics,
        )
        self.model_clients = Counter(
            "openclaw_canary_model_clients",
            "Clients within their history judged at a window boundary, by model version.",
            ["model_version"],
            registry=metrics,
        )
        self.model_underflows = Counter(
            "openclaw_canary_model_underflows",
            "Of those, clients the model's bucket could not serve, by model version.",
            ["model_version"],
            registry=metrics,
        )

    # -- state ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        status = self.status
        return status is not None and status.active

    @property
    def weight(self) -> float:
        status = self.status
        return status.weight if status is not None and status.phase == "canary" else 0.0

    def _set(self, status: CanaryStatus) -> None:
        self.status = status
        for phase in ("none", *PHASES):
            self.phase_gauge.labels(phase).set(1.0 if phase == status.phase else 0.0)
        self.weight_gauge.set(self.weight)
        self.failed_gauge.set(status.failed_checks if status.active else 0)
        self._log.info(
            "canary %s: %s", status.version, status.history[-1].note if status.history else ""
        )

    def start(self, version: str | None, *, champion: str | None, now: float, reason: str) -> None:
        """Start a canary of ``version`` (None: the registry's challenger alias). Raises
        CanaryError when another one is running, there is no such version, or it does not
        load. Asking again for the canary that runs changes nothing (the pipeline sets the
        alias, which the service may follow, and then asks)."""
        if version is None:
            try:
                version = self.registry.alias("challenger")
            except RegistryError as exc:
                raise CanaryError(str(exc)) from exc
            if version is None:
                raise CanaryError(
                    f"no version given and {self.registry.root} has no challenger alias"
                )
        if self.status is not None and self.status.active:
            if self.status.version == version:
                return
            raise CanaryError(
                f"a canary of {self.status.version} is running ({self.status.phase}): "
                "abort it first"
            )
        if version == champion:
            raise CanaryError(f"{version} is the champion already")
        try:
            model = self._loader(self.registry, version, self.bounds)
        except (ArtifactError, RegistryError) as exc:
            raise CanaryError(f"cannot load {version}: {exc}") from exc
        try:  # the alias is what every replica follows: they all canary the same version
            if self.registry.alias("challenger") != version:
                self.registry.promote(version, alias="challenger", reason=reason or "canary")
        except RegistryError as exc:
            raise CanaryError(f"cannot name {version} the challenger: {exc}") from exc
        self.challenger = model
        self._health = _Health()
        self._totals = read_totals(self._metrics_registry)
        self._next_analysis = now + self.config.interval_s
        self._seen_alias = version
        self._set(start(version, champion, now=now, reason=reason or "started"))

    def abort(self, *, now: float, reason: str) -> CanaryStatus:
        if self.status is None or not self.active:
            raise CanaryError("no canary is running")
        self._finish(abort(self.status, now=now, reason=reason))
        assert self.status is not None
        return self.status

    def watch_alias(self, *, champion: str | None, now: float) -> None:
        """Follow the registry's aliases: start a canary when the challenger alias names a
        version not yet acted on; end the running one as the aliases say when they moved
        under it (replicas share the registry, and each runs the canary: the first to
        promote or roll back moves the aliases, the others follow)."""
        # Called every tick: read the aliases only when the file changed since the last look.
        stamp = self.registry.alias_stamp()
        if stamp is not None and stamp == self._alias_stamp:
            return
        try:
            aliases = self.registry.aliases()
        except RegistryError as exc:
            self._log.warning("canary: cannot read the registry's aliases: %s", exc)
            return
        self._alias_stamp = stamp
        target = aliases.get("challenger")
        status = self.status
        if status is not None and status.active:
            if aliases.get("champion") == status.version or target != status.version:
                self.challenger = None
                self._next_analysis = math.inf
                self._set(ended_elsewhere(status, now=now, champion=aliases.get("champion")))
            return
        if not self.auto_start:
            return
        if target is None or target in (self._seen_alias, champion):
            self._seen_alias = target
            return
        self._seen_alias = target
        try:
            self.start(target, champion=champion, now=now, reason="the challenger alias moved")
        except CanaryError as exc:
            self._log.warning("canary: not started for %s: %s", target, exc)

    def _finish(self, status: CanaryStatus) -> None:
        # The registry first, the status after: whoever sees the end sees the aliases moved.
        self.challenger = None
        self._next_analysis = math.inf
        if status.phase == "promoted":
            try:
                self.registry.promote(
                    status.version,
                    alias="champion",
                    reason=f"canary passed {status.analyses} analyses at {status.weight:g}%",
                )
            except RegistryError as exc:  # the alias file is the truth: say so, loudly
                self._log.error("canary: promoting %s failed: %s", status.version, exc)
        elif status.phase in ("rolled_back", "aborted"):
            self._clear_challenger(status)
        self._set(status)

    def _clear_challenger(self, status: CanaryStatus) -> None:
        try:
            if self.registry.alias("challenger") == status.version:
                self.registry.clear(
                    "challenger", reason=f"canary {status.phase}: {status.history[-1].note}"
                )
        except RegistryError as exc:
            self._log.error("canary: clearing the challenger alias failed: %s", exc)

    # -- analysis ------------------------------------------------------------------------

    def observe_window(
        self,
        frame: FeatureFrame,
        predictions: Mapping[str, Mapping[str, tuple[float, float]]],
        peaks: Mapping[str, float],
        *,
        window_s: float,
    ) -> None:
        """Model health of one closed window, for each model that predicted it (``version ->
        client -> (capacity, refill rate)``); the challenger's feeds the analysis."""
        challenger = self.challenger
        for version, predicted in predictions.items():
            n, under, errors = judge_window(frame, predicted, peaks, window_s=window_s)
            self.model_clients.labels(version).inc(n)
            self.model_underflows.labels(version).inc(under)
            if challenger is not None and version == challenger.version:
                self._health.clients += n
                self._health.underflows += under
                self._health.errors.extend(errors)

    def due(self, now: float) -> bool:
        return self.active and now >= self._next_analysis

    def analyse(self, now: float) -> CanaryStatus | None:
        """Run the analysis if one is due; the new status when it ran."""
        if not self.due(now) or self.status is None:
            return None
        totals = read_totals(self._metrics_registry)
        before = self._totals or totals
        latency, decisions, errors = totals.since(before)
        health = self._health
        observation = Observation(
            decisions=decisions,
            latency_p99_s=histogram_quantile(0.99, latency) if decisions > 0 else None,
            error_rate=errors / (decisions + errors) if decisions + errors > 0 else None,
            clients=health.clients,
            underflows=health.underflows,
            prediction_error=float(np.median(health.errors)) if health.errors else None,
        )
        checks = judge(observation, self.config)
        for c in checks:
            self.checks.labels(c.name, "pass" if c.passed else "fail").inc()
        self._totals = totals
        self._health = _Health()
        # Intervals missed (a stalled loop) are one analysis, not a burst of them.
        steps = math.floor((now - self._next_analysis) / self.config.interval_s)
        self._next_analysis += (steps + 1) * self.config.interval_s
        status = advance(self.status, checks, self.config, now=now)
        if status.active:
            self._set(status)
        else:
            self._finish(status)
        return status
