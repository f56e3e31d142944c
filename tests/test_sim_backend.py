"""The simulated backend: FIFO multi-worker queue arithmetic, timeouts, capacity drops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openclaw.sim.backend import Backend, BackendConfig, CapacityDrop, service_times


def test_fifo_workers_queue_in_arrival_order() -> None:
    backend = Backend(BackendConfig(workers=2, queue_timeout_s=10.0))
    # Three requests at t=0 needing 1 s each: two start at once, the third waits for a worker.
    assert backend.serve(0.0, 1.0) == (1.0, True)
    assert backend.serve(0.0, 1.0) == (1.0, True)
    assert backend.serve(0.0, 1.0) == (2.0, True)
    # At t=1.5 one worker is free again (the third request holds the other until 2.0); it
    # serves until 1.75, so the next one waits for it.
    assert backend.serve(1.5, 0.25) == (0.25, True)
    assert backend.serve(1.5, 1.0) == (0.25 + 1.0, True)


def test_latency_grows_with_admitted_load() -> None:
    rng = np.random.default_rng(1)
    config = BackendConfig(workers=2)
    means = []
    for rate in (10.0, 30.0, 42.0):
        backend = Backend(config)
        t = np.cumsum(rng.exponential(1 / rate, size=20_000))
        svc = service_times(config, t.size, rng)
        lat = [backend.serve(a, s)[0] for a, s in zip(t.tolist(), svc.tolist(), strict=True)]
        means.append(float(np.mean(lat)))
    assert means[0] < means[1] < means[2]
    assert means[2] > 2 * means[0]


def test_a_request_that_would_wait_past_the_timeout_fails_without_taking_a_worker() -> None:
    backend = Backend(BackendConfig(workers=1, queue_timeout_s=0.5))
    assert backend.serve(0.0, 1.0) == (1.0, True)
    assert backend.serve(0.1, 1.0) == (0.5, False)  # would wait 0.9 s
    # The failed one took no worker: a request at 0.6 waits only for the first (0.4 s).
    assert backend.serve(0.6, 0.1) == pytest.approx((0.5, True))


def test_capacity_drop_removes_workers_and_slows_service_for_its_period() -> None:
    drop = CapacityDrop(start_s=10.0, end_s=20.0, workers=1, speed=0.5)
    backend = Backend(BackendConfig(workers=3, queue_timeout_s=100.0), [drop])
    assert backend.serve(5.0, 1.0) == (1.0, True)
    # During the drop: one worker at half speed, so 1 s of work takes 2 s and queues.
    assert backend.serve(10.0, 1.0) == (2.0, True)
    assert backend.serve(10.0, 1.0) == (4.0, True)
    # After it the other workers are back and the speed is normal.
    assert backend.serve(25.0, 1.0) == (1.0, True)
    assert backend.serve(25.0, 1.0) == (1.0, True)


def test_overlapping_drops_are_refused() -> None:
    a = CapacityDrop(0.0, 10.0, 1, 1.0)
    b = CapacityDrop(5.0, 15.0, 1, 1.0)
    with pytest.raises(ValueError, match="overlap"):
        Backend(BackendConfig(), [a, b])


def test_service_times_lognormal_by_default_and_the_traces_own_when_known() -> None:
    config = BackendConfig(service_median_ms=50.0, service_sigma=0.25)
    rng = np.random.default_rng(0)
    drawn = service_times(config, 50_000, rng)
    assert np.median(drawn) == pytest.approx(0.050, rel=0.02)
    assert float(np.std(np.log(drawn))) == pytest.approx(0.25, rel=0.03)
    observed = np.array([10.0, 20.0, math.nan] * 100)
    picked = service_times(config, 1000, rng, observed_ms=observed)
    assert set(np.round(picked * 1000).tolist()) == {10.0, 20.0}
    # Too few known values: the lognormal again.
    few = service_times(config, 1000, rng, observed_ms=np.array([5.0] * 10))
    assert len(set(few.tolist())) > 900


def test_calibrated_capacity_is_what_the_workers_serve() -> None:
    config = BackendConfig(workers=4, service_median_ms=50.0, service_sigma=0.25)
    assert config.capacity_rps == pytest.approx(4 / (0.05 * math.exp(0.25**2 / 2)))
    with pytest.raises(ValueError, match="workers"):
        BackendConfig(workers=0)
