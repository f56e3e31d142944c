"""Training (openclaw.model.dataset, openclaw.model.train, openclaw train): pairs, the time split,
envelopes, reproducible weights, calibration, the artifact NumPy runs, the command.

Real data: the NASA trace is ingested into a DuckDB file once per module; training runs a few
passes over its ~2,000 pairs (seconds)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from openclaw.cli import app
from openclaw.errors import TrainingError
from openclaw.features.core import FEATURE_INDEX, FEATURE_NAMES, US, FeatureFrame, envelope
from openclaw.features.offline import extract_features
from openclaw.inference import predict_bucket_params
from openclaw.model.artifact import Artifact, load_artifact
from openclaw.model.dataset import (
    DataInfo,
    PairCounts,
    PairSet,
    StoreEnvelopes,
    chord_bound,
    data_range,
    knot_envelopes,
    make_pairs,
    quota_needs,
    time_split,
)
from openclaw.model.predictor import OutputBounds
from openclaw.model.train import (
    TrainConfig,
    Trained,
    buckets,
    conformal_rank,
    fit_network,
    network_outputs,
    policy_defaults,
    predict_trained,
    train_model,
    write_model,
)
from openclaw.settings import Settings
from openclaw.telemetry.base import EventStore
from openclaw.telemetry.ingest import ingest_file
from openclaw.telemetry.stores import open_event_store
from openclaw.testing.traces import NASA

W_US = 300 * US
#: Few passes: the tests check behaviour, not the best model (that is openclaw train's job).
EPOCHS = 12


@dataclass(frozen=True)
class Nasa:
    store: EventStore
    settings: Settings
    frame: FeatureFrame
    pairs: PairSet
    bounds: OutputBounds


@pytest.fixture(scope="module")
def nasa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nasa]:
    settings = Settings()
    path = tmp_path_factory.mktemp("nasa") / "events.duckdb"
    store = open_event_store(f"duckdb://{path}", settings=settings)
    ingest_file(NASA, "nasa-tsv", store, settings=settings, background=False)
    frame = extract_features(store, settings=settings)
    pairs, _ = make_pairs(frame)
    yield Nasa(store, settings, frame, pairs, OutputBounds.from_settings(settings))
    store.close()


@pytest.fixture(scope="module")
def trained(nasa: Nasa) -> Trained:
    split = time_split(nasa.pairs, validation_fraction=0.15, test_fraction=0.15)
    return train_model(
        nasa.pairs,
        split,
        config=TrainConfig(epochs=EPOCHS, seed=0),
        envelopes=StoreEnvelopes(nasa.store),
        bounds=nasa.bounds,
    )


@pytest.fixture(scope="module")
def artifact(trained: Trained, nasa: Nasa, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    counts = PairCounts(
        feature_rows=len(nasa.frame), pairs=len(nasa.pairs), silent_next=0, last_window=0
    )
    return write_model(
        tmp_path_factory.mktemp("models"),
        trained,
        data=DataInfo(source="test", start=None, end=None, counts=counts),
        since_us=None,
        until_us=None,
        now=dt.datetime(2025, 8, 2, tzinfo=dt.UTC),
        revision="test",
    )


# -- pairs and the split ------------------------------------------------------------------------


def _frame(rows: list[tuple[str, int, float, float]]) -> FeatureFrame:
    """A frame of (client, window, r*, b*) rows; other features 0, n_requests = b*."""
    x = np.zeros((len(rows), len(FEATURE_NAMES)))
    for i, (_, _, r, b) in enumerate(rows):
        x[i, FEATURE_INDEX["r_star"]] = r
        x[i, FEATURE_INDEX["b_star"]] = b
        x[i, FEATURE_INDEX["n_requests"]] = b
    return FeatureFrame(
        client_id=np.array([c for c, _, _, _ in rows], dtype=object),
        window_start_us=np.array([w * W_US for _, w, _, _ in rows], dtype=np.int64),
        X=x,
        r_star=x[:, FEATURE_INDEX["r_star"]].copy(),
        b_star=x[:, FEATURE_INDEX["b_star"]].copy(),
        window_s=300.0,
        label_horizon_s=60.0,
    )


def test_pairs_join_a_window_to_the_same_clients_next_and_skip_silent_ones() -> None:
    frame = _frame(
        [
            ("b", 11, 0.5, 5.0),
            ("a", 10, 0.1, 2.0),
            ("a", 11, 0.2, 3.0),  # a: 10 -> 11
            ("b", 10, 0.3, 4.0),  # b: 10 -> 11
            ("a", 13, 0.4, 6.0),  # a silent in 12: 11 has no pair; 13 is the last window
            ("c", 12, 0.6, 7.0),  # c: silent in 13
        ]
    )
    pairs, counts = make_pairs(frame)
    assert counts.feature_rows == 6
    assert counts.pairs == 2
    assert counts.last_window == 1
    assert counts.silent_next == 3  # a@11, c@12, and nobody else
    assert pairs.client_id.tolist() == ["a", "b"]
    assert pairs.window.tolist() == [10, 10]
    # The target is the next window's label [b*, r*]; the input the current window's features.
    np.testing.assert_array_equal(pairs.need, [[3.0, 0.2], [5.0, 0.5]])
    np.testing.assert_array_equal(pairs.persistence(), [[2.0, 0.1], [4.0, 0.3]])


def test_time_split_cuts_at_window_boundaries_in_time_order(nasa: Nasa) -> None:
    split = time_split(nasa.pairs, validation_fraction=0.15, test_fraction=0.15)
    label = nasa.pairs.window + 1
    train, val, test = label[split.train], label[split.validation], label[split.test]
    assert split.train.size + split.validation.size + split.test.size == len(nasa.pairs)
    # Every training label precedes every validation label, which precede every test label.
    assert train.max() < val.min() == split.validation_from
    assert val.max() < test.min() == split.test_from
    for part, share in ((split.validation, 0.15), (split.test, 0.15)):
        assert abs(part.size / len(nasa.pairs) - share) < 0.05


def test_time_split_refuses_too_little_data() -> None:
    pairs, _ = make_pairs(_frame([("a", 1, 0.1, 1.0), ("a", 2, 0.1, 1.0), ("a", 3, 0.1, 1.0)]))
    with pytest.raises(TrainingError, match="at least 3 windows"):
        time_split(pairs, validation_fraction=0.2, test_fraction=0.2)
    with pytest.raises(TrainingError, match="nothing to train on"):
        time_split(pairs, validation_fraction=0.5, test_fraction=0.5)


def test_head_cuts_where_the_simulator_splits(nasa: Nasa) -> None:
    from openclaw.sim.trace import load_trace

    trace = load_trace(NASA)
    span = data_range(nasa.store, window_us=W_US, days=None, head=1 / 3)
    assert span is not None
    assert span[1] == trace.split_us(1 / 3, window_us=W_US)
    whole = data_range(nasa.store, window_us=W_US, days=30.0)
    assert whole is not None
    assert whole[0] == trace.start_us // W_US * W_US
    assert whole[1] == (trace.end_us // W_US + 1) * W_US
    last_hour = data_range(nasa.store, window_us=W_US, days=1 / 24)
    assert last_hour == (whole[1] - 3600 * US, whole[1])


# -- envelopes ---------------------------------------------------------------------------------


def _reference_envelopes(nasa: Nasa, pairs: PairSet, rates: np.ndarray) -> np.ndarray:
    """b*(rate) of each pair's next window from the scanned arrivals, one pair at a time."""
    batch = nasa.store.scan()
    out = np.empty(rates.shape)
    for i in range(len(pairs)):
        start = (int(pairs.window[i]) + 1) * W_US
        mine = (batch.client_id == pairs.client_id[i]) & (batch.ts_us >= start)
        mine &= batch.ts_us < start + W_US
        ts = np.sort(batch.ts_us[mine]) / US
        assert ts.size >= 1
        out[i] = [envelope(ts, float(r)) for r in rates[i]]
    return out


def test_store_envelopes_are_the_reference_envelope_and_the_chord_bounds_them(nasa: Nasa) -> None:
    rng = np.random.default_rng(3)
    some = nasa.pairs.take(rng.choice(len(nasa.pairs), 60, replace=False))
    rates = np.column_stack(
        [rng.uniform(0, 0.05, len(some)), rng.uniform(0, 2, len(some)), some.need[:, 1]]
    )
    exact = StoreEnvelopes(nasa.store, slice_s=3600.0)(some, rates)
    np.testing.assert_allclose(exact, _reference_envelopes(nasa, some, rates), rtol=1e-12)
    # The label's own bucket admits its window.
    assert np.all(exact[:, 2] <= some.need[:, 0])
    bound = knot_envelopes(some, rates)
    assert np.all(bound >= exact - 1e-9)
    # ... and is exact at its points (rate 0: every request of the window).
    zero = np.zeros((len(some), 1))
    count_next = some.knot_caps[:, 0]
    np.testing.assert_array_equal(
        chord_bound(some.knot_rates, some.knot_caps, zero)[:, 0], count_next
    )
    np.testing.assert_allclose(StoreEnvelopes(nasa.store)(some, zero)[:, 0], count_next)


def test_quota_needs_are_each_client_windows_envelope_read_a_slice_at_a_time(nasa: Nasa) -> None:
    batch = nasa.store.scan()
    since = int(batch.ts_us.min()) // W_US * W_US
    until = (int(batch.ts_us.max()) // W_US + 1) * W_US
    need, n = quota_needs(
        nasa.store, since_us=since, until_us=until, window_us=W_US, rate=0.01, slice_s=3600.0
    )
    # The reference: every (client, window) segment of the scan, one at a time.
    window = batch.ts_us // W_US
    reference = []
    for key in sorted(set(zip(batch.client_id.astype(str), window.tolist(), strict=True))):
        mine = (batch.client_id == key[0]) & (window == key[1])
        ts = np.sort(batch.ts_us[mine] - key[1] * W_US) / US
        reference.append((round(envelope(ts, 0.01), 9), int(mine.sum())))
    got = sorted(zip(np.round(need, 9).tolist(), n.astype(int).tolist(), strict=True))
    assert len(got) == len(reference)
    assert int(n.sum()) == len(batch)  # every event in exactly one segment
    expected = sorted(reference)
    np.testing.assert_allclose([g[0] for g in got], [e[0] for e in expected], rtol=1e-12)
    assert [g[1] for g in got] == [e[1] for e in expected]


def test_the_manifest_carries_the_policy_defaults_fitted_on_the_training_data(
    nasa: Nasa,
) -> None:
    from openclaw.sim.labels import segment
    from openclaw.sim.policies import PolicyConfig, fit_static

    batch = nasa.store.scan()
    span = (int(batch.ts_us.min()) // W_US * W_US, (int(batch.ts_us.max()) // W_US + 1) * W_US)
    defaults = policy_defaults(nasa.store, span=span, window_us=W_US)
    tier, unhealthy = defaults["tier_default"], defaults["unhealthy_default"]
    config = PolicyConfig()
    assert tier["budget"] == config.model_budget
    assert unhealthy["budget"] == config.static_budget
    assert defaults["requests"] == len(batch)
    # The static grid search at the lowest rate, on the same segments, gives the same quotas.
    codes = np.unique(batch.client_id.astype(str), return_inverse=True)[1]
    segments = segment(batch.ts_us, codes, window_us=W_US, horizon_us=60 * US)
    lowest = np.array([config.static_rate_grid[0]])
    for quota in (tier, unhealthy):
        fit = fit_static(segments, budget=quota["budget"], rates=lowest, window_s=300.0)
        assert quota["capacity"] == pytest.approx(fit.capacity)
        assert quota["refill_rate"] == fit.refill_rate
    assert tier["capacity"] > unhealthy["capacity"]  # a smaller budget costs a bigger quota


def test_chord_bound_interpolates_between_points_and_stays_flat_beyond() -> None:
    rates = np.array([[0.0, 0.1, 1.0, 10.0, 20.0]])
    caps = np.array([[100.0, 50.0, 10.0, 2.0, 1.0]])
    got = chord_bound(rates, caps, np.array([[0.05, 0.1, 5.5, 30.0]]))
    np.testing.assert_allclose(got, [[75.0, 50.0, 6.0, 1.0]])


# -- training ----------------------------------------------------------------------------------


def _fit(nasa: Nasa, seed: int) -> str:
    pairs = nasa.pairs
    split = time_split(pairs, validation_fraction=0.15, test_fraction=0.15)
    from openclaw.model.dataset import fit_features

    spec = fit_features(pairs.X[split.train])
    fitted = fit_network(
        spec.transform(pairs.X[split.train]),
        pairs.targets()[split.train],
        spec.transform(pairs.X[split.validation]),
        pairs.targets()[split.validation],
        config=TrainConfig(epochs=4, seed=seed),
    )
    assert fitted.epochs == 4
    return fitted.checksum


def test_same_data_and_seed_give_the_same_weights_and_another_seed_others(nasa: Nasa) -> None:
    import torch

    threads = torch.get_num_threads()
    first = _fit(nasa, seed=0)
    assert _fit(nasa, seed=0) == first
    assert _fit(nasa, seed=1) != first
    # The process-wide torch settings are restored.
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_model_beats_the_constant_and_persistence_on_validation(trained: Trained) -> None:
    m = trained.metrics
    assert m["val_pinball"] is not None
    assert m["val_pinball_constant"] is not None
    assert m["val_pinball_persistence"] is not None
    assert m["val_pinball"] < m["val_pinball_constant"]
    assert m["val_pinball"] < m["val_pinball_persistence"]
    curve = trained.fitted.curve
    assert len(curve.train_loss) == len(curve.validation_loss) == trained.fitted.epochs
    assert curve.validation_loss[curve.best_epoch - 1] == min(curve.validation_loss)


def test_calibration_reaches_its_coverage_on_the_calibration_slice(
    trained: Trained, nasa: Nasa
) -> None:
    val = nasa.pairs.take(trained.split.validation)
    served = predict_trained(trained, val.X, nasa.bounds)
    need = _reference_envelopes(nasa, val, served[:, 1:2])[:, 0]
    coverage = float(np.mean(served[:, 0] >= need))
    assert coverage >= trained.config.coverage
    assert trained.calibration.coverage == trained.config.coverage
    assert coverage == pytest.approx(trained.metrics["val_coverage"])
    assert trained.metrics["val_under_allocation"] == pytest.approx(1 - coverage)
    # Calibration was needed: the raw 0.9-quantile buckets cover less.
    uncalibrated = trained.metrics["val_coverage_uncalibrated"]
    assert uncalibrated is not None
    assert uncalibrated < coverage
    # At the conformal rank: one pair fewer covered would miss the target.
    n = len(val)
    assert math.ceil((n + 1) * 0.95) <= round(coverage * n)
    assert trained.calibration.details["rank"] == conformal_rank(n, 0.95)


def test_calibration_refuses_a_coverage_its_slice_cannot_state() -> None:
    assert conformal_rank(19, 0.95) == 19
    with pytest.raises(TrainingError, match="at least 19"):
        conformal_rank(18, 0.95)


def test_training_refuses_too_small_a_validation_slice(nasa: Nasa) -> None:
    split = time_split(nasa.pairs, validation_fraction=0.15, test_fraction=0.15)
    tiny = replace(split, validation=split.validation[:10])
    with pytest.raises(TrainingError, match=r"cannot state a coverage of 0\.95"):
        train_model(
            nasa.pairs,
            tiny,
            config=TrainConfig(epochs=1),
            envelopes=knot_envelopes,
            bounds=nasa.bounds,
        )


# -- the artifact ------------------------------------------------------------------------------


def test_the_artifact_runs_in_numpy_as_the_network_did_in_torch(
    artifact: Artifact, trained: Trained, nasa: Nasa
) -> None:
    import torch

    from openclaw.model.train import build_torch_network

    val = nasa.pairs.take(trained.split.validation)
    net = build_torch_network(len(FEATURE_NAMES), trained.config.hidden)
    state = torch.load(artifact.directory / "model.pt", weights_only=True)
    net.load_state_dict(state)
    inputs = artifact.manifest.features.transform(val.X)
    with torch.no_grad():
        torch_out = net(torch.from_numpy(inputs)).numpy().astype(np.float64)
    numpy_out = network_outputs(artifact.network, artifact.manifest.features, val.X)
    np.testing.assert_allclose(numpy_out, torch_out, atol=1e-5, rtol=1e-5)

    # The public entry point, on the artifact directory, against torch + calibration + bounds.
    factors = artifact.manifest.calibration.factors
    expected = buckets(
        np.expm1(torch_out), (factors["capacity"], factors["refill_rate"]), nasa.bounds
    )
    cap, rate = predict_bucket_params(artifact.directory, val.X, settings=nasa.settings)
    assert isinstance(cap, np.ndarray)
    np.testing.assert_allclose(np.column_stack([cap, rate]), expected, rtol=1e-5, atol=1e-6)
    one = predict_bucket_params(artifact.directory, val.X[0], settings=nasa.settings)
    assert one == pytest.approx((expected[0, 0], expected[0, 1]), rel=1e-5)


def test_the_manifest_says_how_the_model_was_made(
    artifact: Artifact, trained: Trained, nasa: Nasa
) -> None:
    m = load_artifact(artifact.directory).manifest
    assert sorted(m.files) == ["learning_curve.png", "model.pt", "weights.safetensors"]
    assert (artifact.directory / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert m.features.names == FEATURE_NAMES
    assert m.output.transform == "expm1"
    assert m.calibration.method == "conformal-envelope"
    assert m.data.rows == trained.split.rows()
    assert m.data.details["training"]["weights_sha256"] == trained.fitted.checksum
    assert m.metrics["val_coverage"] == trained.metrics["val_coverage"]
    # Normalisation from the training rows only: the mean of a log1p column is that of the
    # training pairs, not of every pair.
    col = m.features.columns[FEATURE_INDEX["n_requests"]]
    assert col.log1p
    n_requests = nasa.pairs.X[:, FEATURE_INDEX["n_requests"]]
    assert col.mean == pytest.approx(float(np.mean(np.log1p(n_requests[trained.split.train]))))
    assert col.mean != pytest.approx(float(np.mean(np.log1p(n_requests))))


# -- the command -------------------------------------------------------------------------------


def test_openclaw_train_on_the_nasa_trace_writes_an_artifact_that_predicts(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--trace", str(NASA), "--out", str(tmp_path), "--epochs", "3", "--seed", "5"]
    )
    assert result.exit_code == 0, result.output
    (directory,) = tmp_path.iterdir()
    assert directory.name.startswith("model-")
    assert f"wrote {directory}" in result.output.replace("\n", "")
    assert "coverage" in result.output
    manifest = load_artifact(directory).manifest
    assert manifest.data.details["training"]["seed"] == 5
    assert manifest.data.details["training"]["epochs_run"] == 3
    assert manifest.data.details["trace_events"] == 33_996
    assert manifest.calibration.details["envelope"].startswith("exact")
    defaults = manifest.calibration.details["policy_defaults"]
    assert defaults["requests"] == 33_996
    assert defaults["tier_default"]["capacity"] >= defaults["unhealthy_default"]["capacity"] >= 1
    assert "defaults (clients without a prediction): a quota of" in result.output
    cap, rate = predict_bucket_params(directory, np.ones(len(FEATURE_NAMES)))
    assert isinstance(cap, float)
    assert math.isfinite(cap)
    assert cap >= 0
    assert math.isfinite(rate)
    assert rate >= 0

    # The simulator's hook loads it too.
    from openclaw.sim.policies import default_model_loader

    frame = _frame([("a", 1, 0.2, 3.0), ("b", 1, 0.05, 1.0)])
    loaded = default_model_loader(directory)
    caps, rates = loaded.predict(frame)
    assert caps.shape == rates.shape == (2,)
    assert np.all(caps >= 1.0)
    # ... and serves the defaults the manifest carries.
    from openclaw.policy.rules import manifest_defaults

    assert manifest_defaults(loaded) == (
        (defaults["tier_default"]["capacity"], defaults["tier_default"]["refill_rate"]),
        (defaults["unhealthy_default"]["capacity"], defaults["unhealthy_default"]["refill_rate"]),
    )

    # A second run the same day gets the next version.
    again = CliRunner().invoke(
        app, ["train", "--trace", str(NASA), "--out", str(tmp_path), "--epochs", "1"]
    )
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [directory.name, f"{directory.name}-2"]


def test_openclaw_train_from_a_store_url(nasa: Nasa, tmp_path: Path) -> None:
    # A store of its own: the module's store stays open in this process (DuckDB locks a file).
    url = f"duckdb://{tmp_path / 'events.duckdb'}"
    store = open_event_store(url, settings=Settings())
    try:
        store.insert(nasa.store.scan())
    finally:
        store.close()
    result = CliRunner().invoke(
        app,
        ["train", "--store", url, "--days", "0.25", "--out", str(tmp_path / "m"), "--epochs", "2"],
    )
    assert result.exit_code == 0, result.output
    (directory,) = (tmp_path / "m").iterdir()
    window = load_artifact(directory).manifest.data
    assert window.start is not None
    assert window.end is not None
    assert window.end - window.start == dt.timedelta(hours=6)


def test_openclaw_train_says_what_is_wrong(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tsv"
    result = CliRunner().invoke(app, ["train", "--trace", str(missing), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "nope.tsv" in result.output
    both = CliRunner().invoke(
        app, ["train", "--trace", str(NASA), "--store", "duckdb://x", "--out", str(tmp_path)]
    )
    assert both.exit_code == 2
    assert "not both" in both.output
    empty = CliRunner().invoke(
        app, ["train", "--store", f"duckdb://{tmp_path / 'e.duckdb'}", "--out", str(tmp_path)]
    )
    assert empty.exit_code == 2
    assert "no events to train on" in empty.output


def test_bench_train_runs_on_a_small_workload(tmp_path: Path) -> None:
    from rich.console import Console

    from openclaw.bench.train import Options, run

    out = tmp_path / "bench.json"
    result = run(
        Options(rows=5000, epochs=2, json_path=out), command="test", console=Console(quiet=True)
    )
    assert result["rows"] == 5000
    assert result["epochs"] == 2
    assert result["rows_per_s"] > 0
    assert result["verdict"] in ("PASS", "FAIL")
    assert out.exists()
