"""openclaw.inference: bucket parameters from artifacts and bare state_dicts, in NumPy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from openclaw.errors import ArtifactError, ModelError
from openclaw.features.core import FEATURE_NAMES, FeatureFrame
from openclaw.inference import load_model, predict_batch, predict_bucket_params
from openclaw.model import Calibration, OutputSpec, load_bucket_model
from openclaw.settings import Settings
from openclaw.testing.models import build_artifact, mlp_weights

WIDE = Settings(
    model_min_capacity=0.0,
    model_max_capacity=1e9,
    model_min_refill_rate=0.0,
    model_max_refill_rate=1e9,
)


def _clamped(out: np.ndarray, settings: Settings) -> np.ndarray:
    low = [settings.model_min_capacity, settings.model_min_refill_rate]
    high = [settings.model_max_capacity, settings.model_max_refill_rate]
    clamped: np.ndarray = np.clip(out, low, high)
    return clamped


def _is_param(value: object) -> bool:
    return type(value) is float and np.isfinite(value) and value >= 0


def test_a_plain_linear_state_dict_and_a_torch_row(tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(10, 2).state_dict(), path)
    x = torch.randn(1, 10)

    result = predict_bucket_params(path, x)

    assert isinstance(result, tuple)
    assert len(result) == 2
    capacity, rate = result
    assert _is_param(capacity)
    assert _is_param(rate)


def test_a_bare_state_dict_is_read_literally_then_clamped(tmp_path: Path) -> None:
    """No manifest: inputs as given, outputs as (capacity, refill_rate), clamped to bounds."""
    torch.manual_seed(1)
    layer = torch.nn.Linear(10, 2)
    path = tmp_path / "linear.pt"
    torch.save(layer.state_dict(), path)
    x = torch.randn(64, 10)
    expected = layer(x).detach().numpy().astype(np.float64)
    assert (expected < 0).any()  # so the floor is exercised, not only the identity

    got = predict_batch(path, x, settings=WIDE)
    np.testing.assert_allclose(got, _clamped(expected, WIDE), rtol=1e-5, atol=1e-6)

    defaults = Settings()
    got = predict_batch(path, x, settings=defaults)
    np.testing.assert_allclose(got, _clamped(expected, defaults), rtol=1e-5, atol=1e-6)
    assert (got[:, 0] >= 1.0).all()  # model_min_capacity's default: one token


def test_an_mlp_state_dict_runs_as_torch_does(tmp_path: Path) -> None:
    torch.manual_seed(2)
    last = torch.nn.Linear(64, 2)
    net = torch.nn.Sequential(
        torch.nn.Linear(24, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        last,
    )
    with torch.no_grad():
        last.bias.fill_(3.0)  # mostly positive outputs: the comparison is of real values
    x = torch.randn(500, 24) * 3
    expected = net(x).detach().numpy().astype(np.float64)
    pt = tmp_path / "mlp.pt"
    torch.save(net.state_dict(), pt)
    st = tmp_path / "mlp.safetensors"
    save_file({k: v.numpy() for k, v in net.state_dict().items()}, str(st))

    for path in (pt, st):
        got = predict_batch(path, x, settings=WIDE)
        np.testing.assert_allclose(got, _clamped(expected, WIDE), rtol=1e-4, atol=1e-4)
        assert (got > 0).mean() > 0.9


def test_single_row_forms_give_two_floats_and_batches_give_arrays(tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    torch.manual_seed(3)
    torch.save(torch.nn.Linear(10, 2).state_dict(), path)
    row = np.random.default_rng(0).normal(size=10)
    as_floats = [
        predict_bucket_params(path, row),
        predict_bucket_params(path, row.tolist()),
        predict_bucket_params(path, row[None, :]),
        predict_bucket_params(path, torch.from_numpy(row)),
        predict_bucket_params(path, [row.tolist()]),
    ]
    for result in as_floats:
        assert all(_is_param(v) for v in result)
        assert result == pytest.approx(as_floats[0], rel=1e-6)

    rows = np.random.default_rng(1).normal(size=(5, 10))
    capacity, rate = predict_bucket_params(path, rows)
    assert isinstance(capacity, np.ndarray)
    assert isinstance(rate, np.ndarray)
    assert capacity.shape == rate.shape == (5,)
    batch = predict_batch(path, rows)
    assert batch.shape == (5, 2)
    np.testing.assert_array_equal(batch[:, 0], capacity)
    np.testing.assert_array_equal(batch[:, 1], rate)
    assert predict_batch(path, row).shape == (1, 2)


def test_an_empty_batch_gives_an_empty_result(tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(10, 2).state_dict(), path)
    empties: list[object] = [np.empty((0, 10)), [], torch.empty(0, 10)]
    for empty in empties:
        capacity, rate = predict_bucket_params(path, empty)
        assert isinstance(capacity, np.ndarray)
        assert isinstance(rate, np.ndarray)
        assert capacity.shape == rate.shape == (0,)
        assert predict_batch(path, empty).shape == (0, 2)


@pytest.mark.parametrize(
    ("features", "expected", "got"),
    [
        (np.zeros(9), "expects 10 features per row", "one row of 9 values"),
        (np.zeros((3, 11)), "expects 10 features per row", "(3, 11)"),
        (np.zeros((2, 3, 10)), "one row (1-D) or rows (2-D)", "(2, 3, 10)"),
        (torch.zeros(1, 9), "expects 10 features per row", "(1, 9)"),
        (np.zeros((0, 3)), "expects 10 features per row", "(0, 3)"),
    ],
)
def test_shapes_that_do_not_fit_name_expected_and_got(
    tmp_path: Path, features: object, expected: str, got: str
) -> None:
    path = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(10, 2).state_dict(), path)
    with pytest.raises(ModelError) as info:
        predict_bucket_params(path, features)
    assert expected in str(info.value)
    assert got in str(info.value)


def test_inputs_that_are_not_numbers_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(10, 2).state_dict(), path)
    with pytest.raises(ModelError, match="not a rectangular array"):
        predict_bucket_params(path, [[1.0] * 10, [1.0] * 9])
    with pytest.raises(ModelError, match="must be numbers"):
        predict_bucket_params(path, ["a"] * 10)


def test_an_artifact_normalises_transforms_and_calibrates(tmp_path: Path) -> None:
    """All-zero weights and a final bias of log1p(9), log1p(4): expm1 gives 9 and 4, the
    factors 2 and 0.5 give 18 and 2, whatever the features."""
    weights = mlp_weights((4, 3, 2))
    weights = {k: np.zeros_like(v) for k, v in weights.items()}
    weights["2.bias"] = np.log1p(np.array([9.0, 4.0], dtype=np.float32))
    from openclaw.model import write_artifact
    from openclaw.testing.models import feature_spec

    artifact = write_artifact(
        tmp_path / "model-20250809",
        weights,
        features=feature_spec(4),
        calibration=Calibration(factors={"capacity": 2.0, "refill_rate": 0.5}, coverage=0.99),
        output=OutputSpec(transform="expm1"),
        revision="test",
        write_pt=False,
    )
    for path in (artifact.directory, artifact.directory / "manifest.json"):
        capacity, rate = predict_bucket_params(path, [1.0, 2.0, np.nan, np.inf])
        assert capacity == pytest.approx(18.0, rel=1e-5)
        assert rate == pytest.approx(2.0, rel=1e-5)


def test_a_file_inside_an_artifact_loads_the_whole_artifact(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path / "model-20250809", write_pt=True)
    x = np.random.default_rng(0).lognormal(0, 1, (20, 24))
    by_dir = predict_batch(artifact.directory, x)
    for name in ("weights.safetensors", "model.pt"):
        model = load_model(artifact.directory / name)
        assert model.version == "model-20250809"
        np.testing.assert_array_equal(predict_batch(model, x), by_dir)


def test_extreme_inputs_give_finite_params_within_the_caps(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path / "model-20250809")
    settings = Settings(model_max_capacity=5000.0, model_max_refill_rate=50.0)
    usual = np.full(24, 10.0)
    rows = np.stack(
        [
            usual,
            usual * 1e6,  # a spike a million times the usual
            usual * 1e300,
            np.full(24, np.inf),
            np.full(24, -np.inf),
            np.full(24, np.nan),
            -usual * 1e6,
            np.where(np.arange(24) % 2 == 0, np.inf, np.nan),
        ]
    )
    out = predict_batch(artifact.directory, rows, settings=settings)
    assert np.isfinite(out).all()
    assert (out[:, 0] >= settings.model_min_capacity).all()
    assert (out[:, 0] <= 5000.0).all()
    assert (out[:, 1] >= 0).all()
    assert (out[:, 1] <= 50.0).all()
    # Beyond what training saw, inputs are clipped to its edge: a million-fold spike and an
    # infinity are the same most extreme row.
    np.testing.assert_array_equal(out[1], out[3])


def test_extreme_inputs_to_a_bare_state_dict_stay_finite(tmp_path: Path) -> None:
    torch.manual_seed(4)
    path = tmp_path / "mlp.pt"
    torch.save(
        torch.nn.Sequential(
            torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)
        ).state_dict(),
        path,
    )
    rows = np.array(
        [[np.inf] * 10, [-np.inf] * 10, [np.nan] * 10, [1e300] * 10, [3e38] * 5 + [-3e38] * 5]
    )
    settings = Settings()
    out = predict_batch(path, rows, settings=settings)
    assert np.isfinite(out).all()
    assert (out[:, 0] >= settings.model_min_capacity).all()
    assert (out[:, 0] <= settings.model_max_capacity).all()
    assert (out[:, 1] >= 0).all()
    assert (out[:, 1] <= settings.model_max_refill_rate).all()


def test_a_model_that_predicts_absurdly_is_capped(tmp_path: Path) -> None:
    """A final bias of 1000 (log space): exp overflows to inf, which becomes the cap."""
    from openclaw.model import write_artifact
    from openclaw.testing.models import feature_spec

    weights = mlp_weights((3, 2))
    weights["0.bias"] = np.array([1000.0, -1000.0], dtype=np.float32)
    weights["0.weight"] = np.zeros_like(weights["0.weight"])
    artifact = write_artifact(
        tmp_path / "model-20250809",
        weights,
        features=feature_spec(3),
        output=OutputSpec(transform="exp"),
        revision="test",
        write_pt=False,
    )
    settings = Settings(model_max_capacity=777.0, model_min_refill_rate=0.25)
    assert predict_bucket_params(artifact.directory, [0, 0, 0], settings=settings) == (
        777.0,
        0.25,
    )


def test_feature_frames_are_checked_by_name(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path / "model-20250809")
    rng = np.random.default_rng(0)
    frame = FeatureFrame(
        client_id=np.array(["a", "b", "c"], dtype=object),
        window_start_us=np.zeros(3, dtype=np.int64),
        X=rng.lognormal(0, 1, (3, len(FEATURE_NAMES))),
        r_star=np.ones(3),
        b_star=np.ones(3),
        window_s=300.0,
        label_horizon_s=60.0,
    )
    model = load_bucket_model(artifact.directory)  # the simulator's hook
    capacity, rate = model.predict(frame)
    assert capacity.shape == rate.shape == (3,)
    np.testing.assert_array_equal(np.stack([capacity, rate], axis=1), predict_batch(model, frame.X))

    swapped = list(FEATURE_NAMES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    renamed = FeatureFrame(
        client_id=frame.client_id,
        window_start_us=frame.window_start_us,
        X=frame.X,
        r_star=frame.r_star,
        b_star=frame.b_star,
        window_s=300.0,
        label_horizon_s=60.0,
        feature_names=tuple(swapped),
    )
    with pytest.raises(ModelError, match=r"column 0 is 'rate_mean'.*expects 'n_requests'"):
        model.predict(renamed)


def test_what_is_not_a_model_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such file") as missing:
        predict_bucket_params(tmp_path / "nope.pt", [0.0] * 10)
    assert missing.value.reason == "missing"
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ArtifactError, match="not a model"):
        predict_bucket_params(text, [0.0] * 10)
    three = tmp_path / "three.pt"
    torch.save(torch.nn.Linear(10, 3).state_dict(), three)
    with pytest.raises(ArtifactError, match="gives 3 outputs"):
        predict_bucket_params(three, [0.0] * 10)
    norm = tmp_path / "norm.pt"
    torch.save(
        torch.nn.Sequential(torch.nn.Linear(10, 2), torch.nn.BatchNorm1d(2)).state_dict(), norm
    )
    with pytest.raises(ArtifactError, match="running_mean' is neither a weight nor a bias"):
        predict_bucket_params(norm, [0.0] * 10)


def test_inference_never_imports_torch(tmp_path: Path) -> None:
    pt = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(10, 2).state_dict(), pt)
    artifact = build_artifact(tmp_path / "model-20250809", write_pt=True)
    script = (
        "import sys\n"
        "from openclaw.inference import predict_bucket_params\n"
        f"print(predict_bucket_params({str(pt)!r}, [0.5] * 10))\n"
        f"print(predict_bucket_params({str(artifact.directory)!r}, [1.0] * 24))\n"
        f"print(predict_bucket_params({str(artifact.directory / 'model.pt')!r}, [1.0] * 24))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3
