"""The drift core (openclaw.rollout.drift): deciles, shares, the population stability index, the
latest day, and the drift file the service reads."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from openclaw.errors import PipelineError
from openclaw.rollout.drift import (
    DAY_US,
    EPSILON,
    Bins,
    bin_shares,
    decile_edges,
    drift_document,
    feature_psi,
    fit_baseline,
    fit_bins,
    in_span,
    latest_day,
    psi,
    read_drift,
    worst,
    write_json,
)


def test_identical_distributions_have_a_psi_of_about_zero() -> None:
    rng = np.random.default_rng(0)
    base = rng.lognormal(0.0, 1.0, 20_000)
    bins = fit_bins(base)
    assert len(bins.edges) == 9
    assert sum(bins.proportions) == pytest.approx(1.0)
    assert all(p == pytest.approx(0.1, abs=0.001) for p in bins.proportions)
    assert psi(bins.proportions, bin_shares(base, bins.edges)) == pytest.approx(0.0, abs=1e-9)
    # Another sample of the same distribution: only sampling noise.
    same = rng.lognormal(0.0, 1.0, 20_000)
    assert psi(bins.proportions, bin_shares(same, bins.edges)) < 0.01


def test_a_shifted_distribution_has_a_psi_above_the_significant_level() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0.0, 1.0, 10_000)
    bins = fit_bins(base)
    shifted = rng.normal(1.0, 1.0, 10_000)
    value = psi(bins.proportions, bin_shares(shifted, bins.edges))
    assert value > 0.25
    # A small shift is a small PSI: the index grows with the shift.
    nudged = psi(bins.proportions, bin_shares(rng.normal(0.1, 1.0, 10_000), bins.edges))
    assert 0 < nudged < 0.1 < value


def test_empty_bins_give_a_large_but_finite_psi() -> None:
    bins = fit_bins(np.arange(100.0))
    # Every recent value above the baseline's range: nine empty bins, one holding everything.
    shares = bin_shares(np.full(50, 1e6), bins.edges)
    assert shares.tolist() == [0.0] * 9 + [1.0]
    value = psi(bins.proportions, shares)
    assert math.isfinite(value)
    assert value > 1.0
    # Exactly the formula with the floor: (a - e) ln(a / e) per bin.
    e = np.maximum(np.asarray(bins.proportions), EPSILON)
    a = np.maximum(shares, EPSILON)
    assert value == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    # A baseline bin that is empty (a constant feature has one) and stays empty adds nothing.
    constant = fit_bins(np.full(10, 3.0))
    assert constant.edges == (3.0,)
    assert constant.proportions == (1.0, 0.0)
    assert psi(constant.proportions, bin_shares([3.0, 3.0], constant.edges)) == 0.0
    assert math.isfinite(psi(constant.proportions, bin_shares([4.0], constant.edges)))


def test_bins_are_right_closed_and_duplicate_deciles_merge() -> None:
    # Mostly zeros: the deciles 0.1 .. 0.7 are all 0, one bin holds them.
    values = np.array([0.0] * 70 + [1.0] * 10 + [2.0] * 10 + [5.0] * 10)
    edges = decile_edges(values)
    assert edges[0] == 0.0
    assert np.all(np.diff(edges) > 0)
    shares = bin_shares(values, edges)
    assert shares[0] == pytest.approx(0.7)  # (-inf, 0] holds the zeros
    assert shares.sum() == pytest.approx(1.0)
    assert bin_shares([0.0, 0.5], [0.0, 1.0]).tolist() == [0.5, 0.5, 0.0]
    # Non-finite values count on neither side.
    assert bin_shares([np.nan, np.inf, 0.5], [0.0, 1.0]).tolist() == [0.0, 1.0, 0.0]
    assert decile_edges([np.nan]).size == 0
    with pytest.raises(ValueError, match="ascending"):
        Bins((1.0, 1.0), (0.5, 0.25, 0.25))
    with pytest.raises(ValueError, match="proportions"):
        Bins((1.0,), (1.0,))


def test_feature_psi_per_feature_and_the_worst() -> None:
    rng = np.random.default_rng(2)
    base = np.column_stack([rng.normal(0, 1, 5000), rng.exponential(1.0, 5000)])
    baseline = fit_baseline(base, ["a", "b"])
    recent = np.column_stack([rng.normal(0, 1, 2000), rng.exponential(3.0, 2000)])
    values = feature_psi(baseline, recent, ["a", "b"])
    assert set(values) == {"a", "b"}
    assert values["a"] < 0.02
    assert values["b"] > 0.25
    assert worst(values) == ("b", values["b"])
    assert worst({}) is None
    # A feature with no finite recent value has no PSI; one the baseline lacks is left out.
    gone = np.column_stack([np.full(3, np.nan), np.ones(3)])
    assert set(feature_psi(baseline, gone, ["a", "b"])) == {"b"}
    assert feature_psi(baseline, recent, ["a", "c"]).keys() == {"a"}


def test_latest_day_is_the_last_whole_utc_day_else_the_last_24_hours() -> None:
    day = 20_000 * DAY_US  # a UTC midnight
    hour = DAY_US // 24
    # Three days and some: the last whole day ends at the last midnight.
    assert latest_day(day + 5 * hour, day + 3 * DAY_US + 2 * hour) == (
        day + 2 * DAY_US,
        day + 3 * DAY_US,
        True,
    )
    # Exactly one whole day.
    assert latest_day(day, day + DAY_US) == (day, day + DAY_US, True)
    # 30 hours across a midnight, no whole day: the last 24 hours.
    assert latest_day(day + 4 * hour, day + 34 * hour) == (day + 10 * hour, day + 34 * hour, False)
    # Less than a day: all of it.
    assert latest_day(day + 4 * hour, day + 8 * hour) == (day + 4 * hour, day + 8 * hour, False)
    starts = np.array([day, day + 23 * hour, day + DAY_US - 60_000_000], dtype=np.int64)
    # A window must lie wholly inside the span: the last one crosses midnight.
    assert in_span(starts, 300_000_000, (day, day + DAY_US)).tolist() == [True, True, False]


def test_read_drift_reads_what_the_pipeline_writes(tmp_path: Path) -> None:
    assert read_drift(tmp_path) is None
    doc = drift_document(
        {"n_requests": 0.31, "seen_s": 0.02},
        run_id="r1",
        computed_at=dt.datetime(2025, 8, 2, tzinfo=dt.UTC),
    )
    assert doc["max"] == 0.31
    assert doc["max_feature"] == "n_requests"
    write_json(tmp_path / "drift.json", doc)
    assert read_drift(tmp_path) == {"n_requests": 0.31, "seen_s": 0.02}
    assert read_drift(str(tmp_path)) == {"n_requests": 0.31, "seen_s": 0.02}
    assert [p.name for p in tmp_path.iterdir()] == ["drift.json"]  # no temporary file left
    (tmp_path / "drift.json").write_text("{not json")
    with pytest.raises(PipelineError, match=r"drift\.json: not valid JSON"):
        read_drift(tmp_path)
    (tmp_path / "drift.json").write_text('{"psi": {"a": "high"}}')
    with pytest.raises(PipelineError, match="not a number"):
        read_drift(tmp_path)
