"""The per-decision series the service counts without prometheus_client's metric objects:
their exposition must read exactly as a Histogram's and a Counter's would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from openclaw.limiter import MemoryStore
from openclaw.limiter.core import Decision
from openclaw.service.metrics import LATENCY_BUCKETS, Metrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def decision(*, allowed: bool, remaining: float) -> Decision:
    return Decision(allowed, remaining, 10.0, 0.0 if allowed else 1.0, 5.0)


def test_latency_histogram_buckets_are_cumulative_with_le_inclusive() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.register(registry, MemoryStore())
    for seconds in (0.00005, 0.2, 0.2000001, 3.0):
        metrics.observe_latency("rate", seconds)
    metrics.observe_latency("grpc", 0.001)
    got = samples(registry)
    name = "openclaw_decision_latency_seconds"

    def bucket(le: str, endpoint: str = "rate") -> float:
        return got[(f"{name}_bucket", (("endpoint", endpoint), ("le", le)))]

    assert bucket("0.0001") == 1
    assert bucket("0.1") == 1
    assert bucket("0.2") == 2  # 0.2 itself is "<= 0.2"
    assert bucket("0.5") == 3
    assert bucket("1.0") == 3
    assert bucket("+Inf") == 4
    assert got[(f"{name}_count", (("endpoint", "rate"),))] == 4
    assert got[(f"{name}_sum", (("endpoint", "rate"),))] == pytest.approx(3.40005, abs=1e-6)
    assert bucket("0.001", "grpc") == 1
    les = [le for (n, labels) in got if n == f"{name}_bucket" for k, le in labels if k == "le"]
    assert len(les) == 2 * (len(LATENCY_BUCKETS) + 1)


def test_decisions_and_underflow_counters() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.register(registry, MemoryStore())
    text = generate_latest(registry).decode()
    # Declared before any decision, as a labelled prometheus_client metric would be.
    assert "# TYPE openclaw_decisions_total counter" in text
    metrics.observe(decision(allowed=True, remaining=3), policy="model", model_version="v1")
    metrics.observe(decision(allowed=False, remaining=0.5), policy="model", model_version="v1")
    metrics.observe(decision(allowed=False, remaining=2), policy="model", model_version="v2")
    metrics.observe_counts(allowed=5, denied=2, underflow=1, policy="model", model_version="v1")
    got = samples(registry)

    def decisions(result: str, version: str) -> float:
        labels = (("model_version", version), ("policy", "model"), ("result", result))
        return got[("openclaw_decisions_total", labels)]

    assert decisions("allowed", "v1") == 6
    assert decisions("denied", "v1") == 3
    assert decisions("denied", "v2") == 1
    underflow = "openclaw_bucket_underflow_total"
    assert got[(underflow, (("model_version", "v1"), ("policy", "model")))] == 2
    assert (underflow, (("model_version", "v2"), ("policy", "model"))) not in got
