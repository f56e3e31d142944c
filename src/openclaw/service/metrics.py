"""Prometheus metrics of the service, all on a registry the caller injects.

A global default registry would make two apps in one process (tests, an app with the
middleware and the service) share and double-count series; so nothing here touches it.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
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


#: The buckets' ``le`` labels as Prometheus writes them ("0.0001", "1.0", "+Inf").
_LE: Final = (*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf")


class HotMetrics(Collector):
    """The per-decision series, counted in plain dicts and exported at scrape time:
    ``openclaw_decision_latency_seconds{endpoint}`` (histogram), ``openclaw_decisions{result,
    policy, model_version}`` and ``openclaw_bucket_underflow{policy, model_version}``.

    prometheus_client's metric objects take a lock and validate on every ``inc``/``observe``:
    four of them were a tenth of a decision's server time. Decisions are counted on the event
    loop's thread only (the HTTP endpoints and the gRPC servicer run on it), so plain dict
    arithmetic is safe; a scrape (on the same loop) reads a consistent snapshot.
    """

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {}  # endpoint -> per-bucket counts, +Inf last
        self.latency_sum: dict[str, float] = {}
        self.decisions: dict[tuple[str, str, str], float] = {}
        self.underflow: dict[tuple[str, str], float] = {}

    def observe_latency(self, endpoint: str, seconds: float) -> None:
        counts = self.latency.get(endpoint)
        if counts is None:
            counts = self.latency[endpoint] = [0.0] * (len(LATENCY_BUCKETS) + 1)
            self.latency_sum[endpoint] = 0.0
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1.0  # le: value <= bound
        self.latency_sum[endpoint] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily | CounterMetricFamily]:
        latency = HistogramMetricFamily(
            f"{NAMESPACE}_decision_latency_seconds",
            "Time to decide one rate request (or one batch, or one gRPC call), store round "
            "trip included.",
            labels=["endpoint"],
        )
        for endpoint, counts in sorted(self.latency.items()):
            cumulative = list(itertools.accumulate(counts))
            buckets = list(zip(_LE, cumulative, strict=True))
            latency.add_metric([endpoint], buckets, self.latency_sum[endpoint])
        yield latency
        decisions = CounterMetricFamily(
            f"{NAMESPACE}_decisions",
            "Decisions by result (allowed, denied), policy and model version.",
            labels=["result", "policy", "model_version"],
        )
        for labels, value in sorted(self.decisions.items()):
            decisions.add_metric(list(labels), value)
        yield decisions
        underflow = CounterMetricFamily(
            f"{NAMESPACE}_bucket_underflow",
            "Denials on an empty bucket (less than one token left), as opposed to denials of "
            "a costly request on a bucket that still has tokens.",
            labels=["policy", "model_version"],
        )
        for under, value in sorted(self.underflow.items()):
            underflow.add_metric(list(under), value)
        yield underflow


@dataclass(frozen=True, slots=True)
class Metrics:
    """The service's metrics. Build with :meth:`register`."""

    hot: HotMetrics
    store_errors: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry, store: BucketStore) -> Metrics:
        registry.register(StoreCollector(store))
        hot = HotMetrics()
        registry.register(hot)
        return cls(
            hot=hot,
            store_errors=Counter(
                "store_errors",
                "Requests answered 503 because the store raised an error its failure mode "
                "does not cover.",
                namespace=NAMESPACE,
                registry=registry,
            ),
        )

    def observe_latency(self, endpoint: str, seconds: float) -> None:
        self.hot.observe_latency(endpoint, seconds)

    def observe(self, decision: Decision, *, policy: str, model_version: str) -> None:
        """Count one decision."""
        allowed = decision.allowed
        key = ("allowed" if allowed else "denied", policy, model_version)
        decisions = self.hot.decisions
        decisions[key] = decisions.get(key, 0.0) + 1.0
        if not allowed and decision.remaining < 1.0:
            under = (policy, model_version)
            self.hot.underflow[under] = self.hot.underflow.get(under, 0.0) + 1.0

    def observe_counts(
        self, *, allowed: int, denied: int, underflow: int, policy: str, model_version: str
    ) -> None:
        """Count many decisions at once (a batch): the same series as :meth:`observe`."""
        decisions = self.hot.decisions
        for result, n in (("allowed", allowed), ("denied", denied)):
            if n:
                key = (result, policy, model_version)
                decisions[key] = decisions.get(key, 0.0) + n
        if underflow:
            under = (policy, model_version)
            self.hot.underflow[under] = self.hot.underflow.get(under, 0.0) + underflow
