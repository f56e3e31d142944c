"""The replay through the real limiter engine: what each baseline must and must not do."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from openclaw.features.core import FeatureFrame
from openclaw.sim.history import History
from openclaw.sim.metrics import RunMetrics, mean_ci, run_metrics, summarize
from openclaw.sim.policies import (
    Allocation,
    ModelPolicy,
    Persistence,
    PolicyConfig,
    make_policy,
)
from openclaw.sim.replay import (
    ADMITTED,
    DROPPED,
    FAILED,
    THROTTLED,
    Prepared,
    ReplayConfig,
    RunResult,
    prepare,
    replay,
)
from openclaw.sim.run import SimConfig, run_grid
from openclaw.sim.scenarios import SCENARIOS, Calibration, build_demand, calibrate
from openclaw.sim.trace import Trace, load_trace
from openclaw.testing.traces import TRACES

HEAD = TRACES / "nasa_19950701_head.tsv"
US = 1_000_000
W = 300.0
H = 60.0
ABUSIVE = ("runaway", "scraper", "distributed")


@pytest.fixture(scope="module")
def trace() -> Trace:
    return load_trace(HEAD, "nasa-tsv")


@pytest.fixture(scope="module")
def small(trace: Trace) -> Calibration:
    """Two copies of the head: quick runs."""
    return calibrate(trace, window_s=W, amplify=2)


def prepared(
    trace: Trace, calibration: Calibration, scenario: str, seed: int = 0
) -> tuple[Prepared, ReplayConfig]:
    config = ReplayConfig(backend=calibration.backend)
    d = build_demand(trace, scenario, seed, window_s=W, horizon_s=H, calibration=calibration)
    return prepare(d, config), config


def run(
    trace: Trace, calibration: Calibration, scenario: str, policy: str, seed: int = 0
) -> RunResult:
    prep, config = prepared(trace, calibration, scenario, seed)
    return replay(
        prep, make_policy(policy, config=config.policy, legit=prep.legit_segments), config
    )


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_limit_admits_everything(trace: Trace, small: Calibration, scenario: str) -> None:
    result = run(trace, small, scenario, "none")
    assert np.all(result.outcome & ADMITTED)
    assert not np.any(result.outcome & (THROTTLED | DROPPED))
    assert result.attempts == result.outcome.size  # nothing throttled, nothing retried
    m = run_metrics(result)
    assert m.legit_throttled == m.clients_throttled == m.under_allocated == 0.0
    if scenario in ABUSIVE:
        assert m.abusive_requests > 0
        assert m.abuse_admitted == 1.0


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_oracle_throttles_no_legitimate_request_and_admits_no_abuse(
    trace: Trace, small: Calibration, scenario: str
) -> None:
    result = run(trace, small, scenario, "oracle")
    m = run_metrics(result)
    assert m.legit_requests > 0
    assert m.legit_throttled == 0.0
    assert m.legit_dropped == 0.0
    assert m.under_allocated == 0.0
    assert m.abuse_admitted == 0.0
    assert result.attempts == result.outcome.size  # no legitimate retry was needed
    assert np.all(result.outcome[result.legit] & ADMITTED)


class Tight:
    """One request at once, one a minute, for everyone."""

    name = "tight"

    def begin(self, history: History) -> None:
        pass

    def params_for(self, window: int, history: History) -> Allocation:
        return Allocation.uniform(1.0, 1 / 60)


def test_a_too_tight_static_limit_throttles_legitimate_traffic_that_then_retries(
    trace: Trace, small: Calibration
) -> None:
    prep, config = prepared(trace, small, "trace")
    result = replay(prep, Tight(), config)
    m = run_metrics(result)
    assert m.legit_throttled > 0.3
    assert m.clients_throttled > 0.3
    assert m.under_allocated > 0.3
    assert m.legit_dropped > 0.05
    # Retries happened, and some throttled requests got through on a retry.
    assert result.attempts > result.outcome.size
    retried_in = ((result.outcome & THROTTLED) != 0) & ((result.outcome & ADMITTED) != 0)
    assert np.count_nonzero(retried_in) > 0
    # The real engine enforced the bucket: a window admits at most 1 + 300/60 per client.
    d = prep.demand
    admitted = (result.outcome & ADMITTED) != 0
    key = d.client[admitted] * 1000 + (d.ts_us[admitted] - d.start_us) // round(W * US)
    # (a request admitted on a retry may land in the next window: allow that window's too)
    assert np.unique(key, return_counts=True)[1].max() <= 2 * 6


def test_the_best_static_limit_throttles_little_of_the_trace_but_cuts_the_scraper(
    trace: Trace, small: Calibration
) -> None:
    m = run_metrics(run(trace, small, "scraper", "static"))
    assert m.legit_throttled < 0.02
    assert m.abuse_admitted < 0.1


def test_abusers_never_retry(trace: Trace, small: Calibration) -> None:
    result = run(trace, small, "scraper", "static")
    abusive = result.outcome[~result.legit]
    throttled = (abusive & THROTTLED) != 0
    assert throttled.any()
    assert np.all(abusive[throttled] & DROPPED)  # given up at once
    assert not np.any(abusive[throttled] & ADMITTED)


def test_the_governor_keeps_slo_violations_below_no_limit_in_a_capacity_drop(
    trace: Trace,
) -> None:
    calibration = calibrate(trace, window_s=W)  # the default load: enough to overload
    for seed in (0, 1):
        none = run_metrics(run(trace, calibration, "capacity_drop", "none", seed))
        static = run_metrics(run(trace, calibration, "capacity_drop", "static", seed))
        governed = run_metrics(run(trace, calibration, "capacity_drop", "static+gov", seed))
        assert none.slo_violation_s > 300  # the drop hurts
        assert governed.slo_violation_s < 0.8 * none.slo_violation_s
        assert governed.slo_violation_s < static.slo_violation_s


def test_the_trace_alone_keeps_within_the_slo(trace: Trace) -> None:
    calibration = calibrate(trace, window_s=W)
    m = run_metrics(run(trace, calibration, "trace", "none"))
    assert m.slo_violation_s == 0


def comparable(m: RunMetrics) -> RunMetrics:
    return replace(m, wall_s=0.0)


def test_results_are_identical_for_a_seed_and_differ_for_another(trace: Trace) -> None:
    config = SimConfig(amplify=2)
    policies = ["static", "persistence+gov", "oracle"]
    scenarios = ["runaway", "distributed"]
    a = run_grid(trace, scenarios=scenarios, policies=policies, seeds=[0], config=config,
                 keep=lambda r: True)  # fmt: skip
    b = run_grid(trace, scenarios=scenarios, policies=policies, seeds=[0], config=config,
                 keep=lambda r: True)  # fmt: skip
    c = run_grid(trace, scenarios=scenarios, policies=policies, seeds=[1], config=config)
    assert [comparable(m) for m in a.metrics] == [comparable(m) for m in b.metrics]
    for x, y in zip(a.kept, b.kept, strict=True):
        assert np.array_equal(x.outcome, y.outcome)
        assert np.array_equal(x.timeline.p99_ms, y.timeline.p99_ms, equal_nan=True)
    differ = [
        comparable(m) != comparable(replace(n, seed=m.seed))
        for m, n in zip(a.metrics, c.metrics, strict=True)
    ]
    assert all(differ)


class PersistenceModel:
    """A "model" that predicts each client's last window times 2, from the feature rows."""

    def predict(
        self, features: FeatureFrame
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return features.column("b_star") * 2.0, features.column("r_star") * 2.0


def test_the_model_hook_fed_by_the_feature_code_reproduces_persistence(
    trace: Trace, small: Calibration
) -> None:
    prep, config = prepared(trace, small, "runaway")
    policy_config = replace(config.policy, persistence_margin=2.0)
    by_hook = replay(prep, ModelPolicy(PersistenceModel(), config=policy_config, margin=2.0),
                     config)  # fmt: skip
    direct = replay(prep, Persistence(policy_config), config)
    assert np.array_equal(by_hook.outcome, direct.outcome)
    assert by_hook.under_allocated == direct.under_allocated
    assert run_metrics(by_hook).legit_throttled > 0  # not vacuous


class ShareRecorder:
    """Records the traffic shares the hook feeds it; predicts nothing useful."""

    def __init__(self) -> None:
        self.shares: list[npt.NDArray[np.float64]] = []

    def predict(
        self, features: FeatureFrame
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        self.shares.append(features.column("traffic_share").copy())
        return np.full(len(features), 1e6), np.full(len(features), 1e6)


def test_the_model_sees_traffic_shares_of_one_copy_in_an_amplified_replay(
    trace: Trace,
) -> None:
    """Amplified k times, each client's share of a window's traffic is k times smaller than
    in the trace a model trains on; the hook scales it back."""
    means = []
    for k in (1, 4):
        prep, config = prepared(trace, calibrate(trace, window_s=W, amplify=k), "trace")
        model = ShareRecorder()
        replay(prep, ModelPolicy(model, config=config.policy), config)
        shares = np.concatenate(model.shares)
        assert shares.size
        assert np.all((shares > 0) & (shares <= 1))
        means.append(float(shares.mean()))
    # The copies are shifted in time, so windows do not hold exactly k of everything.
    assert means[1] == pytest.approx(means[0], rel=0.35)
    assert means[1] > 2 * means[0] / 4


def test_a_model_returning_garbage_is_refused(trace: Trace, small: Calibration) -> None:
    class Broken:
        def predict(
            self, features: FeatureFrame
        ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
            return np.full(len(features), np.nan), np.ones(len(features))

    prep, config = prepared(trace, small, "trace")
    with pytest.raises(ValueError, match="non-finite"):
        replay(prep, ModelPolicy(Broken(), config=PolicyConfig()), config)


def test_per_second_p99_and_violations_agree(trace: Trace) -> None:
    calibration = calibrate(trace, window_s=W)
    result = run(trace, calibration, "distributed", "static+gov")
    tl = result.timeline
    assert tl.violation.sum() > 0
    has = np.isfinite(tl.p99_ms)
    slow_by_value = tl.p99_ms[has] > calibration.backend.slo_p99_ms
    errors = tl.failed[has] > calibration.backend.slo_error_rate * tl.done[has]
    assert np.array_equal(tl.violation[has], slow_by_value | errors)
    assert not tl.violation[~has].any()
    assert tl.done.sum() == tl.admitted.sum()
    assert tl.attempts.sum() == result.attempts
    assert (tl.multiplier < 1).any()  # the governor acted
    assert np.count_nonzero(result.outcome & FAILED) == tl.failed.sum()


def test_carrying_bucket_state_across_windows_admits_less_abuse(
    trace: Trace, small: Calibration
) -> None:
    prep, config = prepared(trace, small, "scraper")
    policy = make_policy("static", config=config.policy)
    reset = run_metrics(replay(prep, policy, config))
    carried = run_metrics(replay(prep, policy, replace(config, reset_each_window=False)))
    assert carried.abuse_admitted < reset.abuse_admitted


def test_mean_and_confidence_interval() -> None:
    assert mean_ci([1.0, 2.0, 3.0]) == pytest.approx((2.0, 4.303 / np.sqrt(3)))
    assert mean_ci([5.0]) == (5.0, 0.0)
    ms = [
        RunMetrics("s", "p", seed, 10, v, 0.0, 5, 0.0, 0.0, 0, 0.0, 0, 1.0, 10, 0.1)
        for seed, v in enumerate([0.1, 0.3])
    ]
    (summary,) = summarize(ms)
    assert summary.seeds == 2
    assert summary.mean["legit_throttled"] == pytest.approx(0.2)
    assert summary.ci["legit_throttled"] == pytest.approx(12.706 * 0.1 * np.sqrt(2) / np.sqrt(2))
