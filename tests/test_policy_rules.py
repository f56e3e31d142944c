"""The rules around a model's buckets (policy/rules.py), the service's and the replay's."""

from __future__ import annotations

import numpy as np
import pytest

from openclaw.policy.rules import Rules, backend_unhealthy, manifest_defaults, serve_buckets

W = 300.0
DEFAULT = (30.0, 0.01)  # admits 33 per window


def serve(cap: list[float], rate: list[float], **kw: object) -> tuple[list[float], list[float]]:
    args: dict[str, object] = {
        "refused": np.zeros(len(cap)),
        "n_requests": np.full(len(cap), 10.0),
        "default": DEFAULT,
        "window_s": W,
        "unhealthy": False,
        "rules": Rules(),
    }
    args.update(kw)
    c, r = serve_buckets(np.array(cap), np.array(rate), **args)  # type: ignore[arg-type]
    return c.tolist(), r.tolist()


def test_floor_then_quota() -> None:
    cap, rate = serve([5.0, 100.0], [0.001, 0.1])
    # 5 + 0.3 < 33: raised to (30, 0.01), then served as the quota 30 + 3 at the default rate.
    assert cap == pytest.approx([33.0, 130.0])
    assert rate == pytest.approx([0.01, 0.01])


def test_no_floor_while_the_backend_is_unhealthy() -> None:
    cap, _ = serve([5.0], [0.001], unhealthy=True)
    assert cap == pytest.approx([5.3])


def test_the_refusal_guard_holds_a_client_that_ignored_its_429s() -> None:
    refused = np.array([0.9, 0.4])
    sent = np.array([1000.0, 1000.0])
    cap, rate = serve([500.0, 500.0], [1.0, 1.0], refused=refused, n_requests=sent)
    # 90% refused: at most half of the 100 it was let through; 40%: not held.
    assert cap == pytest.approx([50.0, 500.0 + 300.0])
    assert rate == pytest.approx([0.01, 0.01])
    off = Rules(guard_keep=1.0)
    assert serve([500.0], [1.0], refused=refused[:1], n_requests=sent[:1], rules=off)[0] == [
        pytest.approx(800.0)
    ]


def test_backend_health_and_manifest_defaults() -> None:
    assert backend_unhealthy(250.0, 0.0, slo_p99_ms=200.0, slo_error_rate=0.01)
    assert backend_unhealthy(10.0, 0.05, slo_p99_ms=200.0, slo_error_rate=0.01)
    assert not backend_unhealthy(200.0, 0.01, slo_p99_ms=200.0, slo_error_rate=0.01)

    class Cal:
        def __init__(self, details: object) -> None:
            self.details = details

    class Model:
        def __init__(self, details: object) -> None:
            self.calibration = Cal(details)

    good = {
        "policy_defaults": {
            "tier_default": {"capacity": 4, "refill_rate": 0.1},
            "unhealthy_default": {"capacity": 2, "refill_rate": 0.1},
        }
    }
    assert manifest_defaults(Model(good)) == ((4.0, 0.1), (2.0, 0.1))
    assert manifest_defaults(Model({})) is None
    assert manifest_defaults(object()) is None
    with pytest.raises(ValueError, match="malformed"):
        manifest_defaults(Model({"policy_defaults": {"tier_default": {}}}))
