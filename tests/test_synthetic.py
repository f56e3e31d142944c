"""Synthetic traffic: determinism, the shape of the traffic, labelled abuse that behaves as
labelled, calibration against the NASA trace, and ``openclaw generate`` end to end."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from openclaw.errors import ConfigError, IngestError
from openclaw.settings import Settings
from openclaw.telemetry.events import EventBatch, validate_event
from openclaw.telemetry.stores import open_event_store
from openclaw.telemetry.synthetic import (
    NASA_MODEL,
    AbuseLabel,
    SyntheticSpec,
    SyntheticTraffic,
    _bounded_backlog,
    abuse_mask,
    batch_to_jsonl,
    fit_batch,
    fit_trace,
    generate,
    read_labels_csv,
    read_trace,
    restrict_to_time_of_day,
    time_of_day_window,
    traffic_stats,
    write_labels_csv,
)
from openclaw.testing.traces import NASA

BIN = Path(sys.executable).parent
US = 1_000_000
HOUR_US = 3600 * US


@cache
def week() -> tuple[SyntheticTraffic, tuple[AbuseLabel, ...]]:
    """A week of traffic with two incidents of each kind (shared by the read-only tests)."""
    return generate(SyntheticSpec(days=7, clients=20_000, abusive=6), seed=11)


@cache
def nasa() -> EventBatch:
    return read_trace(NASA)


def legit_mask(traffic: SyntheticTraffic, labels: tuple[AbuseLabel, ...]) -> npt.NDArray[np.bool_]:
    return (traffic.client < traffic.legit_clients) & ~abuse_mask(traffic, labels)


def code_of(traffic: SyntheticTraffic, client_id: str) -> int:
    return int(np.flatnonzero(traffic.client_names == client_id)[0])


# -- determinism ---------------------------------------------------------------------------------


def assert_same(a: EventBatch, b: EventBatch) -> None:
    for name in EventBatch.__slots__:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_same_seed_same_events_and_labels() -> None:
    spec = SyntheticSpec(days=1, clients=2_000, abusive=3)
    one, labels_one = generate(spec, seed=5)
    two, labels_two = generate(spec, seed=5)
    assert len(one) > 10_000
    assert_same(one.to_batch(), two.to_batch())
    assert labels_one == labels_two
    # The chunks are the same events, in the same order.
    assert_same(EventBatch.concat(list(one.batches(3_333))), one.to_batch())


def test_another_seed_other_events_and_ids() -> None:
    spec = SyntheticSpec(days=1, clients=2_000, abusive=3)
    one, labels_one = generate(spec, seed=5)
    two, labels_two = generate(spec, seed=6)
    a, b = one.to_batch(), two.to_batch()
    assert len(a) != len(b) or not np.array_equal(a.ts_us, b.ts_us)
    assert not set(a.event_id.tolist()) & set(b.event_id.tolist())
    assert not set(a.client_id.tolist()) & set(b.client_id.tolist())
    assert labels_one != labels_two


def test_abuse_adds_events_and_leaves_the_legitimate_arrivals_alone() -> None:
    base = SyntheticSpec(days=2, clients=3_000, abusive=0)
    quiet, no_labels = generate(base, seed=3)
    busy, labels = generate(dataclasses.replace(base, abusive=3), seed=3)
    assert no_labels == ()
    assert len(labels) >= 3
    assert len(busy) > len(quiet)
    # Separate random streams: every legitimate arrival is still there, at the same instant.
    assert np.isin(quiet.ts_us, busy.ts_us).all()


def test_event_times_are_inside_the_span_and_sub_second() -> None:
    traffic, _ = week()
    spec = SyntheticSpec(days=7)
    assert traffic.ts_us.min() >= spec.start_us
    assert traffic.ts_us.max() < spec.start_us + 7 * 24 * HOUR_US
    assert np.all(np.diff(traffic.ts_us) >= 0)
    assert np.mean(traffic.ts_us % US != 0) > 0.99
    assert np.isfinite(traffic.response_time_ms).all()
    assert (traffic.response_time_ms > 0).all()


# -- the shape of the traffic --------------------------------------------------------------------


def test_daily_cycle() -> None:
    traffic, labels = week()
    legit = legit_mask(traffic, labels)
    per_hour = np.bincount((traffic.ts_us[legit] // HOUR_US) % 24, minlength=24)
    assert per_hour.max() > 3 * per_hour.min()
    # The busiest hours are the trace's (15-17 UTC, midday in Florida), not anywhere.
    assert int(np.argmax(per_hour)) in (14, 15, 16, 17)


def test_client_sizes_are_heavy_tailed() -> None:
    traffic, labels = week()
    legit = legit_mask(traffic, labels)
    per_client = np.sort(np.bincount(traffic.client[legit]))[::-1]
    assert per_client.size == traffic.legit_clients  # each client asked for sent something
    top = per_client[: per_client.size // 100].sum() / per_client.sum()
    assert top > 0.12  # an even split would give 1%; the NASA day gives 10.6%
    assert per_client[0] > 50 * np.median(per_client)


def test_arrivals_come_in_bursts() -> None:
    traffic, labels = week()
    legit = legit_mask(traffic, labels)
    order = np.lexsort((traffic.ts_us[legit], traffic.client[legit]))
    t = traffic.ts_us[legit][order] / US
    same = np.diff(traffic.client[legit][order]) == 0
    gaps = np.diff(t)[same]
    # Most gaps are seconds (inside a burst) or minutes (think time), few in between: far
    # from the memoryless gaps of a Poisson client.
    assert np.mean(gaps <= 5) > 0.5
    assert np.mean(gaps > 30) > 0.15
    cv = gaps.std() / gaps.mean()
    assert cv > 3  # a Poisson process has 1


def test_response_time_rises_with_load() -> None:
    traffic, _ = week()
    minute = (traffic.ts_us - traffic.ts_us.min()) // (60 * US)
    load = np.bincount(minute)
    mean_rt = np.bincount(minute, weights=traffic.response_time_ms) / np.maximum(load, 1)
    busy = load > 0
    assert np.corrcoef(load[busy], mean_rt[busy])[0, 1] > 0.3
    # And not only through overload: below capacity, busier minutes are slower too.
    calm = busy & (load < 0.5 * 60 * traffic.capacity_rps)
    assert np.corrcoef(load[calm], mean_rt[calm])[0, 1] > 0.1


def test_statuses_are_mostly_fine() -> None:
    traffic, labels = week()
    status = traffic.status_code[legit_mask(traffic, labels)]
    assert np.mean((status >= 200) & (status < 400)) > 0.95
    assert 0.002 < np.mean((status >= 400) & (status < 500)) < 0.03
    assert 0 < np.mean(status >= 500) < 0.05


def test_5xx_rise_in_overload() -> None:
    # A scraper alone above the capacity: the overload is certain, not a matter of the seed.
    spec = SyntheticSpec(days=2, clients=6_000, abusive=1, scraper_share=(1.2, 1.5))
    traffic, labels = generate(spec, seed=4)
    assert labels[0].kind == "scraper"
    status = traffic.status_code
    minute = (traffic.ts_us - traffic.ts_us.min()) // (60 * US)
    load = np.bincount(minute)
    errors = np.bincount(minute, weights=status >= 500) / np.maximum(load, 1)
    overload = load > 60 * traffic.capacity_rps
    normal = (load > 0) & ~overload
    assert overload.sum() >= 10
    assert errors[overload].mean() > 0.05
    assert errors[overload].mean() > 10 * errors[normal].mean()
    assert errors[normal].mean() < 0.01
    # Overload shows as shed requests (503) and timeouts (504), not only as slowness.
    assert {503, 504} <= set(np.unique(status[np.isin(minute, np.flatnonzero(overload))]).tolist())


# -- labelled abuse ----------------------------------------------------------------------------


def test_labels_cover_every_kind_and_abusers_behave_as_labelled() -> None:
    traffic, labels = week()
    assert {lb.kind for lb in labels} == {"scraper", "runaway", "distributed"}
    legit = legit_mask(traffic, labels)
    hour_key = traffic.client[legit].astype(np.int64) * 10_000 + traffic.ts_us[legit] // HOUR_US
    normal_p99 = np.percentile(np.unique(hour_key, return_counts=True)[1], 99)

    for lb in labels:
        code = code_of(traffic, lb.client_id)
        mine = traffic.client == code
        inside = mine & (traffic.ts_us >= lb.start_us) & (traffic.ts_us < lb.end_us)
        hours = (lb.end_us - lb.start_us) / HOUR_US
        rate_h = inside.sum() / hours
        if lb.kind == "scraper":
            assert code >= traffic.legit_clients  # a new client
            assert not (mine & ~inside).any()
            assert hours >= 1.0
            assert rate_h > 20 * normal_p99
            # Constant rate: every minute of its window carries about the same load.
            per_min = np.bincount((traffic.ts_us[inside] - lb.start_us) // (60 * US))[:-1]
            assert per_min.std() < 0.1 * per_min.mean()
        elif lb.kind == "runaway":
            assert code < traffic.legit_clients  # an existing client
            outside = mine & ~inside
            active_hours = np.unique(traffic.ts_us[outside] // HOUR_US).size
            own_rate_h = outside.sum() / max(active_hours, 1)
            assert rate_h > 15 * own_rate_h
        else:
            assert code >= traffic.legit_clients
            assert not (mine & ~inside).any()
            assert rate_h < normal_p99 * 5  # modest, each on its own

    distributed = [lb for lb in labels if lb.kind == "distributed"]
    assert len(distributed) >= 2 * 50
    codes = [code_of(traffic, lb.client_id) for lb in distributed]
    together = np.isin(traffic.client, codes).sum()
    scraper_events = max(
        np.sum(traffic.client == code_of(traffic, lb.client_id))
        for lb in labels
        if lb.kind == "scraper"
    )
    assert together > 0.2 * scraper_events  # many modest clients add up


def test_labels_csv_round_trip(tmp_path: Path) -> None:
    _, labels = week()
    path = tmp_path / "labels.csv"
    write_labels_csv(labels, path)
    assert path.read_text().splitlines()[0] == "client_id,kind,start,end"
    assert read_labels_csv(path) == list(labels)
    path.write_text("client_id,kind,start,end\nc1,scraper,2024-01-01T00:00:00Z,yesterday\n")
    with pytest.raises(IngestError, match=r"labels\.csv:2:"):
        read_labels_csv(path)


# -- JSON lines -----------------------------------------------------------------------------------


def test_json_lines_pass_validation_unchanged() -> None:
    traffic, _ = generate(SyntheticSpec(days=0.5, clients=1_000, abusive=3), seed=9)
    batch = traffic.to_batch()
    lines = batch_to_jsonl(batch).splitlines()
    assert len(lines) == len(batch)
    events = [validate_event(orjson.loads(line)) for line in lines]
    assert events == list(batch.events())
    assert all(e.response_time_ms is not None for e in events)


# -- calibration ------------------------------------------------------------------------------


def test_refitting_the_trace_gives_the_shipped_model() -> None:
    assert fit_batch(nasa()) == NASA_MODEL


def test_generated_per_client_distributions_match_the_trace() -> None:
    """Within a factor 1.5 at p50, p90 and p99 (the docs state it), measured alike: legitimate
    traffic, the trace's hours of the day, whole-second timestamps."""
    real_batch = nasa()
    real = traffic_stats(real_batch.ts_us, real_batch.client_id)
    traffic, _ = generate(SyntheticSpec(days=3, clients=8_000, abusive=0), seed=21)
    keep = restrict_to_time_of_day(traffic.ts_us, time_of_day_window(real_batch.ts_us))
    gen = traffic_stats(traffic.ts_us[keep], traffic.client[keep], resolution_s=1.0)
    for name in (
        "per_client_day",
        "per_client_hour",
        "peak_1s",
        "peak_10s",
        "peak_60s",
        "label_b_star",
        "bursts_per_session",
        "burst_size",
    ):
        a, b = getattr(real, name), getattr(gen, name)
        for q in ("p50", "p90", "p99"):
            ratio = getattr(b, q) / getattr(a, q)
            assert 1 / 1.5 <= ratio <= 1.5, (name, q, getattr(a, q), getattr(b, q))
    assert abs(gen.top1_share - real.top1_share) < 0.05
    shares = np.asarray(real.hour_share) > 0
    assert (
        np.corrcoef(np.asarray(real.hour_share)[shares], np.asarray(gen.hour_share)[shares])[0, 1]
        > 0.95
    )


def test_traffic_stats_on_known_arrivals() -> None:
    t0 = 1_704_067_200 * US
    ts = t0 + np.array([0.0, 0.5, 0.9, 5.0, 70.0, 100.0]) * US
    stats = traffic_stats(ts.astype(np.int64), np.array(["a"] * 5 + ["b"], dtype=object))
    assert stats.clients == 2
    assert stats.per_client_day.max == 5
    assert stats.peak_1s.max == 3
    assert stats.peak_10s.max == 4
    assert stats.peak_60s.max == 4
    assert stats.burst_size.max == 4  # 0..5 s is one burst, 70 s another
    assert stats.top1_share == 5 / 6


def test_fit_recovers_the_parameters_it_generated_from() -> None:
    model = dataclasses.replace(
        NASA_MODEL, bounce_share=0.3, think_log_mu=2.5, within_gap_shape=1.0, within_gap_scale_s=0.8
    )
    traffic, _ = generate(SyntheticSpec(days=2, clients=20_000, abusive=0, model=model), seed=2)
    fitted = fit_trace(traffic.ts_us, traffic.client)
    assert fitted.within_gap_shape == pytest.approx(1.0, abs=0.15)
    assert fitted.within_gap_scale_s == pytest.approx(0.8, rel=0.2)
    assert fitted.think_log_mu == pytest.approx(2.5, abs=0.15)
    assert fitted.bounce_share == pytest.approx(0.3, abs=0.08)
    assert fitted.first_burst_pmf[5] == pytest.approx(model.first_burst_pmf[5], abs=0.02)
    assert fitted.burst_size_pmf[0] == pytest.approx(model.burst_size_pmf[0], abs=0.02)
    peak = int(np.argmax(fitted.hour_profile))
    assert peak in (15, 16, 17)


# -- the backend -------------------------------------------------------------------------------


def backlog_reference(
    arrivals: list[float], capacity: float, qmax: float
) -> tuple[list[float], list[float]]:
    q, queue, shed = 0.0, [], []
    for a in arrivals:
        q += a - capacity
        over = max(q - qmax, 0.0)
        q = min(max(q, 0.0), qmax)
        queue.append(q)
        shed.append(over)
    return queue, shed


@pytest.mark.parametrize("seed", range(5))
def test_bounded_backlog_matches_the_recursion(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Calm stretches and overloads, in blocks, so both code paths run and alternate.
    rates = np.repeat(rng.choice([2.0, 9.0, 30.0], 40), rng.integers(5, 400, 40))
    arrivals = rng.poisson(rates).astype(np.float64)
    queue, shed = _bounded_backlog(arrivals, 10.0, 80.0)
    ref_queue, ref_shed = backlog_reference(arrivals.tolist(), 10.0, 80.0)
    np.testing.assert_allclose(queue, ref_queue, atol=1e-6)
    np.testing.assert_allclose(shed, ref_shed, atol=1e-6)
    assert max(ref_shed) > 0  # both paths ran: the cap was hit
    assert min(ref_queue) == 0


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ConfigError, match="days"):
        SyntheticSpec(days=0)
    with pytest.raises(ConfigError, match="clients"):
        SyntheticSpec(clients=0)
    with pytest.raises(ConfigError, match="scraper_hours"):
        SyntheticSpec(scraper_hours=(5.0, 1.0))
    with pytest.raises(ConfigError, match="seed"):
        generate(SyntheticSpec(days=0.1, clients=10), seed=-1)


# -- the command ----------------------------------------------------------------------------------


def openclaw(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "openclaw"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )


def test_generate_writes_jsonl_labels_and_report_that_ingest_accepts(tmp_path: Path) -> None:
    args = ("--days", "1", "--clients", "3000", "--seed", "8", "--start", "2024-05-06")
    done = openclaw(
        "generate",
        *args,
        "--out",
        "events.jsonl",
        "--labels",
        "labels.csv",
        "--calibration-report",
        "report.md",
        "--trace",
        NASA,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    expected, labels = generate(
        SyntheticSpec(days=1, clients=3000, start_us=1_714_953_600 * US), seed=8
    )
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert len(lines) == len(expected)
    assert f"{len(expected):,} events" in done.stdout
    first = validate_event(orjson.loads(lines[0]))
    assert first == next(expected.to_batch().take(slice(0, 1)).events())
    assert read_labels_csv(tmp_path / "labels.csv") == list(labels)
    report = (tmp_path / "report.md").read_text()
    assert "| requests per client-hour |" in report
    assert "| peak requests in 60 s |" in report
    assert "openclaw generate --days 1" in report

    ingested = openclaw(
        "ingest", "events.jsonl", "--format", "jsonl", "--store", "duckdb://t.duckdb", cwd=tmp_path
    )
    assert ingested.returncode == 0, ingested.stderr
    store = open_event_store(f"duckdb://{tmp_path / 't.duckdb'}", settings=Settings())
    try:
        assert store.count() == len(expected)
    finally:
        store.close()


def test_generate_into_a_store_is_idempotent(tmp_path: Path) -> None:
    args = (
        "generate",
        "--days",
        "0.5",
        "--clients",
        "1500",
        "--seed",
        "2",
        "--start",
        "2024-02-01",
        "--store",
        "duckdb://g.duckdb",
    )
    done = openclaw(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected, _ = generate(
        SyntheticSpec(days=0.5, clients=1500, start_us=1_706_745_600 * US), seed=2
    )
    assert f"({len(expected):,} new in the store)" in done.stdout
    again = openclaw(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "(0 new in the store)" in again.stdout
    store = open_event_store(f"duckdb://{tmp_path / 'g.duckdb'}", settings=Settings())
    try:
        assert store.count() == len(expected)
        stored = store.scan()
        assert np.isfinite(stored.response_time_ms).all()
    finally:
        store.close()


def test_generate_errors_name_the_problem(tmp_path: Path) -> None:
    nothing = openclaw("generate", "--days", "1", cwd=tmp_path)
    assert nothing.returncode == 2
    assert "--out" in nothing.stderr
    bad_day = openclaw("generate", "--start", "2024-13-01", "--out", "x.jsonl", cwd=tmp_path)
    assert bad_day.returncode == 2
    assert "2024-13-01" in bad_day.stderr
    missing = openclaw(
        "generate",
        "--days",
        "0.1",
        "--clients",
        "10",
        "--calibration-report",
        "r.md",
        "--trace",
        "no-such.tsv",
        cwd=tmp_path,
    )
    assert missing.returncode == 2
    assert "no-such.tsv" in missing.stderr
    assert not (tmp_path / "x.jsonl").exists()
