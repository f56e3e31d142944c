"""Traces and scenarios: each scenario injects what it says, from its seed alone."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from openclaw.errors import IngestError
from openclaw.features.core import sliding_peak_count
from openclaw.sim.policies import fit_static
from openclaw.sim.scenarios import (
    SCENARIOS,
    Calibration,
    Demand,
    ScenarioConfig,
    build_demand,
    calibrate,
)
from openclaw.sim.trace import Trace, load_trace
from openclaw.testing.traces import NASA, TRACES

HEAD = TRACES / "nasa_19950701_head.tsv"
US = 1_000_000
W = 300.0
H = 60.0


@pytest.fixture(scope="module")
def trace() -> Trace:
    return load_trace(HEAD, "nasa-tsv")


@pytest.fixture(scope="module")
def calibration(trace: Trace) -> Calibration:
    return calibrate(trace, window_s=W, amplify=2)


def demand(trace: Trace, calibration: Calibration, scenario: str, seed: int = 0) -> Demand:
    return build_demand(trace, scenario, seed, window_s=W, horizon_s=H, calibration=calibration)


def test_trace_loads_in_time_order_with_interned_clients(trace: Trace) -> None:
    assert len(trace) == 9_999
    assert len(trace.names) == 936
    assert np.all(np.diff(trace.ts_us) >= 0)
    assert trace.whole_seconds
    assert not trace.response_times_known.size  # access logs record none
    assert trace.names[int(trace.client[0])] == "199.72.81.55"


def test_the_split_is_a_window_boundary_after_the_training_share(trace: Trace) -> None:
    split = trace.split_us(1 / 3, window_us=300 * US)
    assert split % (300 * US) == 0
    cut = trace.start_us + (trace.end_us - trace.start_us) / 3
    assert cut <= split < cut + 300 * US
    with pytest.raises(ValueError, match="train_fraction"):
        trace.split_us(1.0, window_us=300 * US)


def test_a_missing_trace_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(IngestError, match="cannot read"):
        load_trace("/nonexistent/trace.tsv", "nasa-tsv")


def test_calibration_amplifies_a_light_trace_and_sizes_the_workers(trace: Trace) -> None:
    cal = calibrate(trace, window_s=W, target_rps=10.0)
    assert cal.amplify >= 10  # the head offers under 1 request/s
    assert cal.eval_rps >= 10.0
    # The busiest 10 minutes of the trace alone use at most a quarter of the capacity.
    assert cal.backend.capacity_rps >= 4 * cal.peak_rps
    assert calibrate(trace, window_s=W, amplify=1).amplify == 1


def same(a: Demand, b: Demand) -> bool:
    for f in fields(Demand):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                return False
        elif f.name == "train":
            if not np.array_equal(x.rel_s, y.rel_s) or not np.array_equal(x.b_star, y.b_star):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_scenario_is_a_pure_function_of_its_seed(
    trace: Trace, calibration: Calibration, scenario: str
) -> None:
    a = demand(trace, calibration, scenario, seed=3)
    b = demand(trace, calibration, scenario, seed=3)
    c = demand(trace, calibration, scenario, seed=4)
    assert same(a, b)
    assert not same(a, c)
    assert np.all(np.diff(a.ts_us) >= 0)
    assert a.ts_us.min() >= a.start_us
    assert a.ts_us.max() < a.end_us


def test_the_trace_scenario_is_the_evaluated_part_all_legitimate(
    trace: Trace, calibration: Calibration
) -> None:
    d = demand(trace, calibration, "trace")
    assert d.legit.all()
    assert not d.abusive_clients.size
    # Two copies of the head's evaluated part (the copy, shifted by up to 30 minutes, brings
    # some training requests into it or takes some out).
    ev = int((trace.ts_us >= d.start_us).sum())
    assert 1.7 * ev < len(d) < 2.3 * ev
    assert len(d.names) == 2 * len(trace.names)
    assert d.names[len(trace.names)] == trace.names[0] + "#1"
    # The in-second spread: timestamps are no longer whole seconds.
    assert np.count_nonzero(d.ts_us % US) > 0.99 * len(d)


def test_runaway_is_one_existing_client_at_20_to_100_times_its_normal_rate(
    trace: Trace, calibration: Calibration
) -> None:
    base = demand(trace, calibration, "trace")
    d = demand(trace, calibration, "runaway")
    (who,) = d.abusive_clients.tolist()
    assert who < len(base.names)  # an existing client
    assert who in set(d.train.client.tolist())
    abusive = d.ts_us[~d.legit]
    span_s = (abusive.max() - abusive.min()) / US
    assert span_s <= 6 * W
    rate = abusive.size / (6 * W)
    train = d.train
    mine = train.client == who
    normal = train.n[mine].sum() / (mine.sum() * W)
    assert 15 * normal < rate < 110 * normal
    # Within its runaway windows the client's own requests are abusive too.
    period = (d.ts_us >= abusive.min() // (W * US) * (W * US)) & (d.ts_us <= abusive.max())
    assert not d.legit[(d.client == who) & period].any()
    assert d.legit[d.client != who].all()


def test_scraper_is_a_new_client_far_above_every_trace_client(
    trace: Trace, calibration: Calibration
) -> None:
    d = demand(trace, calibration, "scraper")
    (who,) = d.abusive_clients.tolist()
    assert d.names[who] == "scraper-1"
    assert who not in set(d.train.client.tolist())
    ts = d.ts_us[d.client == who] / US
    per_minute = sliding_peak_count(ts, 60.0)
    busiest_trace_client = max(
        sliding_peak_count(d.ts_us[d.client == c] / US, 60.0)
        for c in np.unique(d.client[d.legit]).tolist()
    )
    assert per_minute >= 5 * busiest_trace_client
    gaps = np.diff(ts)
    assert gaps.min() > 0.85 / 4.0
    assert gaps.max() < 1.15 / 4.0
    assert (ts.max() - ts.min()) > 3600  # hours (the head's evaluated part is ~2.5 h)


def test_distributed_abuse_is_many_new_clients_each_below_the_static_limit(
    trace: Trace, calibration: Calibration
) -> None:
    config = ScenarioConfig()
    d = demand(trace, calibration, "distributed")
    bots = d.abusive_clients
    assert bots.size == config.distributed.clients
    assert all(d.names[b].startswith("bot-") for b in bots.tolist())
    abusive = ~d.legit
    span_s = (d.ts_us[abusive].max() - d.ts_us[abusive].min()) / US
    total_rate = abusive.sum() / span_s
    # Together: more than the backend serves; each: a few requests a window.
    assert total_rate > calibration.backend.capacity_rps
    # Each bot, in each window, sends fewer requests than the best static bucket admits.
    static = fit_static(d.train, budget=0.01, rates=np.geomspace(1 / 600, 50.0, 96), window_s=W)
    per_window = np.unique(
        (d.client[abusive] - bots.min()) * 1000 + (d.ts_us[abusive] - d.start_us) // round(W * US),
        return_counts=True,
    )[1]
    assert per_window.max() < static.capacity


def test_flash_crowd_is_legitimate_real_sessions_surging_together(
    trace: Trace, calibration: Calibration
) -> None:
    base = demand(trace, calibration, "trace")
    d = demand(trace, calibration, "flash_crowd")
    assert d.legit.all()
    extra = len(d) - len(base)
    assert extra > 1000
    new = [n for n in d.names[len(base.names) :] if n.startswith("crowd-")]
    assert len(new) > 0.5 * ScenarioConfig().flash_crowd.sessions * calibration.amplify

    # The surge: the busiest 10 minutes hold far more than the trace's.
    def busiest(x: Demand) -> int:
        return int(np.bincount((x.ts_us - x.start_us) // (600 * US)).max())

    assert busiest(d) > 2 * busiest(base)


def test_capacity_drop_injects_no_request_only_a_drop(
    trace: Trace, calibration: Calibration
) -> None:
    base = demand(trace, calibration, "trace")
    d = demand(trace, calibration, "capacity_drop")
    assert np.array_equal(base.ts_us, d.ts_us)
    assert np.array_equal(base.client, d.client)
    (drop,) = d.drops
    assert drop.workers == 1
    assert drop.speed < 1
    assert 0 <= drop.start_s < drop.end_s <= d.span_s
    assert not base.drops


def test_an_unknown_scenario_is_refused(trace: Trace, calibration: Calibration) -> None:
    with pytest.raises(ValueError, match="unknown scenario 'dos'"):
        demand(trace, calibration, "dos")


def test_the_full_nasa_day_amplifies_to_about_ten_per_second() -> None:
    cal = calibrate(load_trace(NASA, "nasa-tsv"), window_s=W)
    assert cal.amplify == 13
    assert 10.0 <= cal.eval_rps < 11.0


def test_automatic_amplification_is_capped_for_a_sparse_log() -> None:
    from openclaw.sim.scenarios import MAX_AUTO_AMPLIFY
    from openclaw.telemetry.events import Event, EventBatch

    day = 86_400 * US
    events = [
        Event(f"e{i}", f"c{i % 7}", 1_600_000_000 * US + i * day // 50, 200) for i in range(50)
    ]
    sparse = Trace.from_batch(EventBatch.from_events(events), source="sparse")
    cal = calibrate(sparse, window_s=W)
    assert cal.amplify == MAX_AUTO_AMPLIFY
    assert cal.eval_rps < 1.0
    assert calibrate(sparse, window_s=W, amplify=100).amplify == 100
