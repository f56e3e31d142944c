"""The rules around a model's buckets: what the service serves and the replay evaluates.

One pure function, :func:`serve_buckets`, so the simulator (``sim/policies.py``,
``LearnedModelPolicy``) and the service (``policy/learned.py``) cannot drift apart. Why each
rule exists, with the figures, is in docs/evaluation.md ("The model against the baselines"):

* **floor**: a learned bucket that admits less in a window (``b + r W``) than the default
  bucket is raised to it (not while the backend is unhealthy): a client the model knows is
  never worse off than one it does not.
* **quota**: every bucket is served as a per-window quota, capacity ``b + r W`` refilling at
  the default's rate; buckets start full at each window boundary (the service keys them by
  window), as the labels assume.
* **refusal guard**: a client with more than ``guard_refused`` of its last window's attempts
  refused (429) kept sending after being told to stop, which a legitimate client (it retries a
  few times, after waiting) does not; its bucket admits at most ``guard_keep`` of what it was
  let through (at least ``min_capacity``), whatever the model says.

The default bucket (clients without a prediction, and the floor) comes with the model:
``openclaw train`` fits two on its training data and writes them to the manifest
(``calibration.details.policy_defaults``): ``tier_default`` and, while the backend broke its SLO
in the last window, the tighter ``unhealthy_default``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Bucket = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Rules:
    floor: bool = True
    quota: bool = True
    #: Guard: refused share above which a client is held to ``guard_keep`` (1.0: no guard).
    guard_refused: float = 0.5
    guard_keep: float = 0.5
    min_capacity: float = 1.0


def serve_buckets(
    cap: F64,
    rate: F64,
    *,
    refused: F64,
    n_requests: F64,
    default: Bucket,
    window_s: float,
    unhealthy: bool,
    rules: Rules,
) -> tuple[F64, F64]:
    """The buckets served from the model's (floored) ``cap`` and ``rate`` per client, given
    each client's last window (``refused``: its 429 share, ``n_requests``)."""
    w = window_s
    cap, rate = cap.astype(np.float64, copy=True), rate.astype(np.float64, copy=True)
    d_cap, d_rate = default
    if rules.floor and not unhealthy:
        low = cap + rate * w < d_cap + d_rate * w
        cap[low] = np.maximum(cap[low], d_cap)
        rate[low] = np.maximum(rate[low], d_rate)
    if rules.quota:
        cap += rate * w
        rate[:] = d_rate
    if rules.guard_keep < 1.0:
        ignoring = refused > rules.guard_refused
        if np.any(ignoring):
            admitted = n_requests * (1.0 - refused)
            allowed = np.maximum(admitted * rules.guard_keep, rules.min_capacity)
            cap[ignoring] = np.minimum(cap[ignoring] + rate[ignoring] * w, allowed[ignoring])
            rate[ignoring] = np.minimum(rate[ignoring], d_rate)
    return cap, rate


def backend_unhealthy(
    global_p99_ms: float, global_5xx_frac: float, *, slo_p99_ms: float, slo_error_rate: float
) -> bool:
    """Whether the last window broke the SLO (its nearest-rank p99, 0 when no latency is
    known, or its 5xx share)."""
    return global_p99_ms > slo_p99_ms or global_5xx_frac > slo_error_rate


def manifest_defaults(model: object) -> tuple[Bucket, Bucket] | None:
    """The two defaults a trained model's manifest carries, as ``(tier, unhealthy)``
    ``(capacity, refill_rate)`` pairs; None for a model without them. ValueError when they
    are there and malformed."""
    details = getattr(getattr(model, "calibration", None), "details", None)
    found = details.get("policy_defaults") if isinstance(details, Mapping) else None
    if not isinstance(found, Mapping):
        return None
    try:
        tier, unhealthy = found["tier_default"], found["unhealthy_default"]
        return (
            (float(tier["capacity"]), float(tier["refill_rate"])),
            (float(unhealthy["capacity"]), float(unhealthy["refill_rate"])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the model's policy_defaults are malformed: {found!r}") from exc
