"""Prometheus metrics of the service, all on a registry the caller injects.

A global default registry would make two apps in one process (tests, an app with the
middleware and the service) share and double-count series; so nothing here touches it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from openclaw.limiter.base import BucketStore
from openclaw.limiter.core import Decision

NAMESPACE: Final = "openclaw"

#: Decision latency buckets, in seconds: dense below Envoy's 20 ms rate-limit timeout, with
#: 0.2 s (the canary analysis threshold) as an edge so its quantile is exact there.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
)


class StoreCollector(Collector):
    """Store health read at scrape time from the store itself, which already counts it
    (``RedisStore.failures``, ``fallback_decisions``, ``available``); a memory store has none
    of these and reports zero failures and always available."""

    def __init__(self, store: BucketStore) -> None:
        self._store = store

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        failures = CounterMetricFamily(
            f"{NAMESPACE}_store_round_trip_failures",
            "Store round trips that failed (timeout, connection refused, failover).",
        )
        failures.add_metric([], float(getattr(self._store, "failures", 0)))
        yield failures
        fallback = CounterMetricFamily(
            f"{NAMESPACE}_store_fallback_decisions",
            "Decisions made by the failure mode instead of the store.",
        )
        fallback.add_metric([], float(getattr(self._store, "fallback_decisions", 0)))
        yield fallback
        available = GaugeMetricFamily(
            f"{NAMESPACE}_store_available",
            "1 while decisions come from the store, 0 while they follow the failure mode.",
        )
        available.add_metric([], 1.0 if getattr(self._store, "available", True) else 0.0)
        yield available


class DriftCollector(Collector):
    """``openclaw_feature_drift_psi{feature}``: the latest population stability index the
    retraining pipeline computed (``openclaw pipeline``, its ``drift.json`` in
    ``pipeline_dir``), read at each scrape, so the alert on drift needs no textfile
    collector where the service shares the pipeline's volume. Nothing while no run has
    computed drift; an unreadable file is logged and exports nothing."""

    def __init__(self, pipeline_dir: Path) -> None:
        self._dir = pipeline_dir

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from openclaw.errors import PipelineError
        from openclaw.rollout.drift import read_drift

        try:
            drift = read_drift(self._dir)
        except PipelineError as exc:
            logging.getLogger("openclaw.service").warning("drift not exported: %s", exc)
            return
        if drift is None:
            return
        psi = GaugeMetricFamily(
            f"{NAMESPACE}_feature_drift_psi",
            "Population stability index of the latest day's features against the retained "
            "baseline (the pipeline's last run), by feature.",
            labels=["feature"],
        )
        for feature, value in sorted(drift.items()):
            psi.add_metric([feature], value)
        yield psi


@dataclass(frozen=True, slots=True)
class Metrics:
    """The service's metrics. Build with :meth:`register`."""

    latency: Histogram
    decisions: Counter
    underflow: Counter
    store_errors: Counter
    # Labelled children by (metric, *labels): prometheus_client's labels() validates and
    # locks on every call, a cost paid per request on the hot path otherwise.
    _children: dict[tuple[object, ...], Any] = field(default_factory=dict, repr=False)

    def child(self, metric: Histogram | Counter, *labels: str) -> Any:
        key = (id(metric), *labels)  # the metrics live as long as this object
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    @classmethod
    def register(cls, registry: CollectorRegistry, store: BucketStore) -> Metrics:
        registry.register(StoreCollector(store))
        return cls(
            latency=Histogram(
                "decision_latency_seconds",
                "Time to decide one rate request (or one batch), store round trip included.",
                ["endpoint"],
                namespace=NAMESPACE,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            decisions=Counter(
                "decisions",
                "Decisions by result (allowed, denied), policy and model version.",
                ["result", "policy", "model_version"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            underflow=Counter(
                "bucket_underflow",
                "Denials on an empty bucket (less than one token left), as opposed to "
                "denials of a costly request on a bucket that still has tokens.",
                ["policy", "model_version"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            store_errors=Counter(
                "store_errors",
                "Requests answered 503 because the store raised an error its failure mode "
                "does not cover.",
                namespace=NAMESPACE,
                registry=registry,
            ),
        )

    def observe(self, decision: Decision, *, policy: str, model_version: str) -> None:
        """Count one decision."""
        result = "allowed" if decision.allowed else "denied"
        self.child(self.decisions, result, policy, model_version).inc()
        if not decision.allowed and decision.remaining < 1.0:
            self.child(self.underflow, policy, model_version).inc()

    def observe_counts(
        self, *, allowed: int, denied: int, underflow: int, policy: str, model_version: str
    ) -> None:
        """Count many decisions at once (a batch): the same series as :meth:`observe` per
        decision, at the cost of one label lookup per series instead of per decision."""
        if allowed:
            self.child(self.decisions, "allowed", policy, model_version).inc(allowed)
        if denied:
            self.child(self.decisions, "denied", policy, model_version).inc(denied)
        if underflow:
            self.child(self.underflow, policy, model_version).inc(underflow)
