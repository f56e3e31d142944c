"""Model artifacts: written whole, read back verified, refused when anything was changed."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from openclaw.errors import ArtifactError
from openclaw.features.core import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from openclaw.model import FeatureColumn, FeatureSpec, load_artifact, write_artifact
from openclaw.model.artifact import (
    FORMAT,
    code_revision,
    manifest_checksum,
    next_version,
    parse_version,
    version_name,
)
from openclaw.testing.models import build_artifact, feature_spec, mlp_weights


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rewrite_manifest(directory: Path, edit: object) -> None:
    """Edit a manifest and re-sign it, as a careful forger would."""
    path = directory / "manifest.json"
    body = json.loads(path.read_text())
    assert callable(edit)
    edit(body)
    body["manifest_sha256"] = manifest_checksum(body)
    path.write_text(json.dumps(body))


def test_an_artifact_holds_weights_state_dict_and_a_complete_manifest(tmp_path: Path) -> None:
    created = dt.datetime(2025, 8, 9, 12, 30, tzinfo=dt.UTC)
    artifact = build_artifact(tmp_path / "model-20250809", write_pt=True, created_at=created)
    d = artifact.directory
    assert sorted(p.name for p in d.iterdir()) == [
        "manifest.json",
        "model.pt",
        "weights.safetensors",
    ]
    body = json.loads((d / "manifest.json").read_text())
    assert body["format"] == FORMAT
    assert body["version"] == "model-20250809"
    assert body["created_at"] == "2025-08-09T12:30:00Z"
    assert body["code_revision"] == "test"
    assert body["features"]["schema"] == FEATURE_SCHEMA_VERSION
    assert [c["name"] for c in body["features"]["columns"]] == list(FEATURE_NAMES)
    assert body["features"]["columns"][0] == {
        "name": "n_requests",
        "mean": 1.0,
        "std": 2.0,
        "log1p": True,
        "low": -5.0,
        "high": 5.0,
    }
    assert body["architecture"] == {
        "layers": [
            {"name": "0", "inputs": 24, "outputs": 64, "bias": True},
            {"name": "2", "inputs": 64, "outputs": 64, "bias": True},
            {"name": "4", "inputs": 64, "outputs": 2, "bias": True},
        ],
        "activation": "relu",
        "kind": "mlp",
        "dtype": "float32",
    }
    assert body["output"] == {"names": ["capacity", "refill_rate"], "transform": "expm1"}
    assert body["calibration"]["factors"] == {"capacity": 1.2, "refill_rate": 1.1}
    assert body["calibration"]["coverage"] == 0.99
    assert body["data"]["rows"] == {"train": 1000, "calibration": 200, "validation": 300}
    assert body["data"]["start"] == "2025-08-01T00:00:00Z"
    assert body["metrics"] == {"pinball": 0.12, "coverage": 0.991}
    for name in ("weights.safetensors", "model.pt"):
        assert body["files"][name] == {
            "sha256": _sha(d / name),
            "bytes": (d / name).stat().st_size,
        }
    assert body["manifest_sha256"] == manifest_checksum(body)

    # The same weights three ways: what was given, the safetensors, the torch state_dict.
    given = mlp_weights((24, 64, 64, 2))
    stored = load_file(str(d / "weights.safetensors"))
    state = torch.load(d / "model.pt", weights_only=True)
    assert sorted(stored) == sorted(given) == sorted(state)
    for key, value in given.items():
        np.testing.assert_array_equal(stored[key], value)
        np.testing.assert_array_equal(state[key].numpy(), value)
        assert stored[key].dtype == np.float32


def test_the_weights_checksum_depends_on_the_weights_only(tmp_path: Path) -> None:
    a = build_artifact(tmp_path / "a" / "model-20250809", seed=7)
    b = build_artifact(
        tmp_path / "b" / "model-20250810-3",
        seed=7,
        created_at=dt.datetime(2025, 8, 10, tzinfo=dt.UTC),
    )
    c = build_artifact(tmp_path / "c" / "model-20250809", seed=8)
    sha = [x.manifest.files["weights.safetensors"].sha256 for x in (a, b, c)]
    assert sha[0] == sha[1]
    assert sha[0] != sha[2]


def test_a_written_artifact_runs_in_torch_as_in_numpy(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path / "model-20250809", write_pt=True)
    net = torch.nn.Sequential(
        torch.nn.Linear(24, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 2),
    )
    net.load_state_dict(torch.load(artifact.directory / "model.pt", weights_only=True))
    z = artifact.manifest.features.transform(np.random.default_rng(0).lognormal(0, 2, (50, 24)))
    np.testing.assert_allclose(
        artifact.network.forward(z), net(torch.from_numpy(z)).detach().numpy(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", ["weights.safetensors", "model.pt"])
def test_a_changed_byte_in_any_file_is_refused(tmp_path: Path, name: str) -> None:
    artifact = build_artifact(tmp_path / "model-20250809", write_pt=True)
    path = artifact.directory / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as info:
        load_artifact(artifact.directory)
    assert info.value.reason == "checksum"
    message = str(info.value)
    assert str(path) in message
    assert "checksum mismatch" in message
    assert artifact.manifest.files[name].sha256 in message


def test_a_hand_edited_manifest_is_refused(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path / "model-20250809")
    path = artifact.directory / "manifest.json"
    path.write_text(path.read_text().replace('"capacity": 1.2', '"capacity": 12.0'))
    with pytest.raises(ArtifactError, match="manifest_sha256 says") as info:
        load_artifact(artifact.directory)
    assert info.value.reason == "checksum"


def test_missing_and_unlisted_files_are_refused(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path / "model-20250809", write_pt=True)
    (artifact.directory / "model.pt").unlink()
    with pytest.raises(ArtifactError, match=r"model\.pt: missing") as info:
        load_artifact(artifact.directory)
    assert info.value.reason == "missing"

    other = build_artifact(tmp_path / "x" / "model-20250809")
    (other.directory / "notes.txt").write_text("added later")
    with pytest.raises(ArtifactError, match=r"files not in the manifest: notes\.txt"):
        load_artifact(other.directory)

    with pytest.raises(ArtifactError, match="no such artifact directory") as gone:
        load_artifact(tmp_path / "model-20990101")
    assert gone.value.reason == "missing"
    empty = tmp_path / "model-20250808"
    empty.mkdir()
    with pytest.raises(ArtifactError, match=r"manifest\.json: missing"):
        load_artifact(empty)


def test_weights_that_do_not_match_the_architecture_are_refused(tmp_path: Path) -> None:
    """Even with every checksum made to agree, the shapes are checked against the manifest."""
    artifact = build_artifact(tmp_path / "model-20250809", sizes=(24, 8, 2))
    d = artifact.directory
    save_file(mlp_weights((24, 9, 2)), str(d / "weights.safetensors"))
    entry = {
        "sha256": _sha(d / "weights.safetensors"),
        "bytes": (d / "weights.safetensors").stat().st_size,
    }

    def edit(body: dict[str, object]) -> None:
        files = body["files"]
        assert isinstance(files, dict)
        files["weights.safetensors"] = entry

    _rewrite_manifest(d, edit)
    with pytest.raises(ArtifactError, match="layer '0' is 24 -> 9; the manifest says 24 -> 8"):
        load_artifact(d)


def test_a_manifest_with_nonsense_is_refused_with_the_field_named(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path / "model-20250809")

    def edit(body: dict[str, object]) -> None:
        features = body["features"]
        assert isinstance(features, dict)
        features["columns"][3]["std"] = 0.0

    _rewrite_manifest(artifact.directory, edit)
    with pytest.raises(
        ArtifactError, match=r"features\.columns\.3.*peak_rate_10s\.std must be > 0"
    ):
        load_artifact(artifact.directory)


def test_writing_refuses_what_would_not_load(tmp_path: Path) -> None:
    weights = mlp_weights((24, 8, 2))
    with pytest.raises(ArtifactError, match="takes 24 inputs, the feature spec names 10"):
        write_artifact(tmp_path / "model-20250809", weights, features=feature_spec(10))
    with pytest.raises(ArtifactError, match="gives 3 outputs"):
        write_artifact(tmp_path / "model-20250809", mlp_weights((24, 3)), features=feature_spec(24))
    with pytest.raises(ValueError, match="not a model version"):
        write_artifact(tmp_path / "my-model", weights, features=feature_spec(24))
    with pytest.raises(ArtifactError, match="time zone"):
        write_artifact(
            tmp_path / "model-20250809",
            weights,
            features=feature_spec(24),
            created_at=dt.datetime(2025, 8, 9),  # naive: the point of the test
        )
    bad = dict(weights)
    bad["0.weight"] = bad["0.weight"].copy()
    bad["0.weight"][0, 0] = np.nan
    with pytest.raises(ArtifactError, match="NaN or infinite"):
        write_artifact(tmp_path / "model-20250809", bad, features=feature_spec(24))
    existing = build_artifact(tmp_path / "model-20250810")
    with pytest.raises(ArtifactError, match="exists and is not an empty directory"):
        build_artifact(existing.directory)
    # Nothing half-written was left behind by the refusals.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-20250810"]


def test_feature_normalisation_logs_standardises_and_clips(tmp_path: Path) -> None:
    spec = FeatureSpec(
        schema="test",
        columns=(
            FeatureColumn("count", mean=1.0, std=2.0, log1p=True, low=-3.0, high=3.0),
            FeatureColumn("share", mean=0.5, std=0.25, low=-2.0, high=2.0),
        ),
    )
    rows = np.array(
        [
            [np.e - 1, 0.75],  # log1p -> 1 -> z 0; share z 1
            [-(np.e - 1), 0.0],  # sign kept: -1 -> z -1; z -2
            [1e30, 10.0],  # clipped to high
            [np.inf, -np.inf],  # clipped
            [np.nan, np.nan],  # the mean: z 0
        ]
    )
    z = spec.transform(rows)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, [[0, 1], [-1, -2], [3, 2], [3, -2], [0, 0]], rtol=1e-6, atol=1e-6)

    fitted = FeatureSpec.fit(
        np.array([[0.0, 1.0], [np.e - 1, 3.0], [np.e**2 - 1, 5.0]]),
        ["count", "share"],
        schema="test",
        log1p=["count"],
    )
    count, share = fitted.columns
    assert count.log1p
    assert not share.log1p
    assert count.mean == pytest.approx(1.0)
    assert share.mean == pytest.approx(3.0)
    assert share.std == pytest.approx(np.sqrt(8 / 3))
    assert count.low == pytest.approx(-count.high)
    assert fitted.transform([[1e9, 1e9]]).tolist() == [
        [pytest.approx(count.high), pytest.approx(share.high)]
    ]
    with pytest.raises(ValueError, match="unknown features: nope"):
        FeatureSpec.fit(np.ones((2, 2)), ["a", "b"], schema="t", log1p=["nope"])


def test_versions_are_named_by_day_and_counter() -> None:
    day = dt.date(2025, 8, 9)
    assert version_name(day) == "model-20250809"
    assert next_version([], day) == "model-20250809"
    assert next_version(["model-20250809"], day) == "model-20250809-2"
    assert next_version(["model-20250809", "model-20250809-7", "model-20250808-9"], day) == (
        "model-20250809-8"
    )
    assert parse_version("model-20250809-2") == (day, 2)
    for bad in ("model-20250809-1", "model-20251309", "model-2025080", "x-20250809", "model-"):
        with pytest.raises(ValueError, match="not a model version"):
            parse_version(bad)


def test_the_code_revision_names_the_package_version() -> None:
    import openclaw

    assert code_revision().startswith(f"openclaw {openclaw.__version__}")
