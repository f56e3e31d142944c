"""What a replay is judged on, per run and across seeds.

Per run (scenario, policy, seed); a *request* is one first attempt of the demand with its
retries, so a retried request counts once:

``legit_throttled``   share of legitimate requests with at least one throttled attempt
                      (those retried into success count: the client felt the 429).
``legit_dropped``     share of legitimate requests never admitted (retries exhausted, or a
                      bucket that could never admit them).
``clients_throttled`` share of legitimate clients (clients with a legitimate request) with at
                      least one legitimate request throttled.
``under_allocated``   share of the legitimate (client, window) pairs whose bucket at the window
                      boundary was below their realised need: ``b < b*(r)`` on their legitimate
                      requests (first attempts) of the window.
``abuse_admitted``    share of abusive requests the limiter admitted.
``slo_violation_s``   seconds whose completed requests broke the SLO: nearest-rank p99 latency
                      above ``slo_p99_ms`` or failed share above ``slo_error_rate``.
``goodput_rps``       legitimate requests served without error, per second of the evaluated
                      span.

Across seeds: the mean and the half-width of its 95% confidence interval (Student's t,
``n - 1`` degrees of freedom; 0 for a single seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Final

import numpy as np

from openclaw.sim.replay import ADMITTED, DROPPED, FAILED, THROTTLED, RunResult


@dataclass(frozen=True, slots=True)
class RunMetrics:
    scenario: str
    policy: str
    seed: int
    legit_requests: int
    legit_throttled: float
    legit_dropped: float
    legit_clients: int
    clients_throttled: float
    under_allocated: float
    abusive_requests: int
    abuse_admitted: float
    slo_violation_s: int
    goodput_rps: float
    attempts: int
    wall_s: float


#: The metrics summarised across seeds, in table order, with their table headings.
CORE: Final = (
    ("legit_throttled", "legit throttled"),
    ("legit_dropped", "legit dropped"),
    ("clients_throttled", "clients throttled"),
    ("under_allocated", "under-alloc. windows"),
    ("abuse_admitted", "abuse admitted"),
    ("slo_violation_s", "SLO-violation s"),
    ("goodput_rps", "goodput /s"),
)
#: Shares (shown in percent).
SHARES: Final = frozenset(
    {"legit_throttled", "legit_dropped", "clients_throttled", "under_allocated", "abuse_admitted"}
)


def _share(num: int, den: int) -> float:
    return num / den if den else 0.0


def run_metrics(result: RunResult) -> RunMetrics:
    out = result.outcome
    legit = result.legit
    lo = out[legit]
    ab = out[~legit]
    throttled = (lo & THROTTLED) != 0
    legit_clients = np.unique(result.client[legit])
    hit_clients = np.unique(result.client[legit][throttled])
    served = ((lo & ADMITTED) != 0) & ((lo & FAILED) == 0)
    return RunMetrics(
        scenario=result.scenario,
        policy=result.policy,
        seed=result.seed,
        legit_requests=int(lo.size),
        legit_throttled=_share(int(throttled.sum()), lo.size),
        legit_dropped=_share(int(((lo & DROPPED) != 0).sum()), lo.size),
        legit_clients=int(legit_clients.size),
        clients_throttled=_share(hit_clients.size, legit_clients.size),
        under_allocated=_share(result.under_allocated, result.legit_windows),
        abusive_requests=int(ab.size),
        abuse_admitted=_share(int(((ab & ADMITTED) != 0).sum()), ab.size),
        slo_violation_s=int(result.timeline.violation.sum()),
        goodput_rps=float(served.sum()) / result.span_s if result.span_s > 0 else 0.0,
        attempts=result.attempts,
        wall_s=result.wall_s,
    )


#: Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: 1.96).
_T975: Final = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    return mean, t * math.sqrt(var / n)


@dataclass(frozen=True, slots=True)
class Summary:
    scenario: str
    policy: str
    seeds: int
    mean: dict[str, float]
    ci: dict[str, float]


def summarize(runs: Sequence[RunMetrics]) -> list[Summary]:
    """Per (scenario, policy), in the order first seen, every numeric metric's mean and CI."""
    groups: dict[tuple[str, str], list[RunMetrics]] = {}
    for m in runs:
        groups.setdefault((m.scenario, m.policy), []).append(m)
    numeric = [f.name for f in fields(RunMetrics) if f.name not in ("scenario", "policy", "seed")]
    out = []
    for (scenario, policy), group in groups.items():
        mean: dict[str, float] = {}
        ci: dict[str, float] = {}
        for name in numeric:
            mean[name], ci[name] = mean_ci([float(getattr(m, name)) for m in group])
        out.append(Summary(scenario, policy, len(group), mean, ci))
    return out


def format_value(name: str, mean: float, ci: float | None = None) -> str:
    if name in SHARES:
        text = f"{100 * mean:.2f}%"
        return text if ci is None else f"{text} ± {100 * ci:.2f}"
    if name == "slo_violation_s":
        return f"{mean:.0f}" if ci is None else f"{mean:.0f} ± {ci:.0f}"
    return f"{mean:.3f}" if ci is None else f"{mean:.3f} ± {ci:.3f}"
