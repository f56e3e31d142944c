"""A loaded model that turns feature rows into buckets, in NumPy (serving never imports torch).

What a path may be (:func:`load_predictor`):

* an artifact directory, or its ``manifest.json``: every checksum verified; features are
  normalised as the manifest says, outputs transformed (exp/expm1) and calibrated;
* a file inside an artifact directory (its ``weights.safetensors`` or ``model.pt``): the
  whole artifact, as above (the file is one of those the manifest checks);
* a bare ``.safetensors`` file or ``.pt`` file (a plain state_dict of linear layers, read by
  :mod:`openclaw.model.safe_pt` without torch and without running code). Nothing says how it
  was trained, so it is taken literally: inputs go in as given (only NaN -> 0 and values
  beyond +-1e12 clipped, so the arithmetic stays finite) and the two outputs are read as
  ``(capacity, refill_rate)`` directly (identity transform, no calibration).

Whatever the network says, every bucket leaves within :class:`OutputBounds` (the settings'
``model_min_*``/``model_max_*``): a negative or NaN output becomes the floor, an infinite one
the cap, so the result is always finite and non-negative.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from openclaw.errors import ArtifactError, ConfigError, ModelError
from openclaw.model.artifact import (
    FORMAT,
    MANIFEST,
    OUTPUT_NAMES,
    Calibration,
    FeatureSpec,
    Manifest,
    OutputSpec,
    load_artifact,
    sha256_bytes,
)
from openclaw.model.network import MLP, mlp_from_state_dict
from openclaw.model.safe_pt import parse_state_dict

if TYPE_CHECKING:
    from openclaw.settings import Settings

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: Inputs of a bare state_dict are clipped to +-this: far beyond any real feature, small
#: enough that float32 layers cannot overflow into inf - inf = NaN.
BARE_INPUT_CLIP: Final = 1e12


@dataclass(frozen=True, slots=True)
class OutputBounds:
    """The range every predicted bucket is clamped to."""

    min_capacity: float
    max_capacity: float
    min_refill_rate: float
    max_refill_rate: float

    def __post_init__(self) -> None:
        for name in ("min_capacity", "max_capacity", "min_refill_rate", "max_refill_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"model bound {name} must be finite and >= 0, got {value}")
        if self.min_capacity > self.max_capacity:
            raise ConfigError(
                f"model_min_capacity {self.min_capacity} above model_max_capacity "
                f"{self.max_capacity}"
            )
        if self.min_refill_rate > self.max_refill_rate:
            raise ConfigError(
                f"model_min_refill_rate {self.min_refill_rate} above model_max_refill_rate "
                f"{self.max_refill_rate}"
            )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> OutputBounds:
        if settings is None:
            from openclaw.settings import Settings

            settings = Settings()
        return cls(
            min_capacity=settings.model_min_capacity,
            max_capacity=settings.model_max_capacity,
            min_refill_rate=settings.model_min_refill_rate,
            max_refill_rate=settings.model_max_refill_rate,
        )

    def clamp(self, buckets: F64) -> F64:
        """(n, 2) [capacity, refill_rate] clamped in place: NaN and below the floor -> the
        floor, above the cap (inf included) -> the cap."""
        low = np.array([self.min_capacity, self.min_refill_rate])
        high = np.array([self.max_capacity, self.max_refill_rate])
        nan = np.isnan(buckets)
        if nan.any():
            buckets[nan] = np.broadcast_to(low, buckets.shape)[nan]
        np.clip(buckets, low, high, out=buckets)
        return buckets


def _to_array(features: object) -> npt.NDArray[Any]:
    # A torch tensor, without importing torch: anything with detach/cpu/numpy.
    if all(hasattr(features, a) for a in ("detach", "cpu", "numpy")):
        tensor: Any = features
        try:
            return np.asarray(tensor.detach().cpu().numpy())
        except (TypeError, RuntimeError):
            # bfloat16 and friends have no NumPy dtype: widen to float32 first.
            try:
                return np.asarray(tensor.detach().cpu().float().numpy())
            except Exception as exc:
                raise ModelError(f"features: cannot read this tensor: {exc}") from exc
    try:
        return np.asarray(features)
    except ValueError as exc:
        raise ModelError(f"features: not a rectangular array of numbers ({exc})") from exc


@dataclass(frozen=True, slots=True)
class Rows:
    """Features as (n, n_features) float64, and whether they came as one row."""

    X: F64
    single: bool


@dataclass(frozen=True, slots=True)
class BucketPredictor:
    """A model ready to predict: network, normalisation, output transform, calibration."""

    network: MLP
    #: None for a bare state_dict: inputs are taken as given.
    features: FeatureSpec | None
    output: OutputSpec
    calibration: Calibration
    bounds: OutputBounds
    #: The artifact's version, or ``<file name>@<sha256 prefix>`` for a bare file.
    version: str
    source: Path
    manifest: Manifest | None = None

    @property
    def n_features(self) -> int:
        return self.network.n_inputs

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        return None if self.features is None else self.features.names

    def rows(self, features: object) -> Rows:
        """Coerce what a caller passes (a FeatureFrame, a NumPy array, a torch tensor, a list;
        1-D = one row, 2-D = rows) into rows this model takes, or raise :class:`ModelError`
        naming the shape expected and the shape got."""
        frame_names = getattr(features, "feature_names", None)
        frame_x = getattr(features, "X", None)
        if frame_names is not None and frame_x is not None:
            names = self.feature_names
            if names is not None and tuple(frame_names) != names:
                raise ModelError(self._names_mismatch(tuple(frame_names)))
            features = frame_x
        array = _to_array(features)
        if array.dtype.kind not in "fiub":
            raise ModelError(f"features must be numbers, got an array of {array.dtype}")
        expected = self._expected()
        if array.ndim == 1:
            if array.size == 0:  # [] is an empty batch: a row of no features fits no model
                return Rows(np.empty((0, self.n_features)), single=False)
            if array.shape[0] != self.n_features:
                raise ModelError(f"features: got one row of {array.shape[0]} values, {expected}")
            return Rows(array.astype(np.float64)[None, :], single=True)
        if array.ndim != 2:
            raise ModelError(
                f"features must be one row (1-D) or rows (2-D); got shape {array.shape}, {expected}"
            )
        if array.shape[1] != self.n_features:
            raise ModelError(
                f"features: got shape {array.shape} ({array.shape[1]} per row), {expected}"
            )
        return Rows(array.astype(np.float64, copy=False), single=array.shape[0] == 1)

    def _expected(self) -> str:
        names = self.feature_names
        listed = f" ({', '.join(names)})" if names is not None else ""
        return f"the model {self.version} expects {self.n_features} features per row{listed}"

    def _names_mismatch(self, got: tuple[str, ...]) -> str:
        names = self.feature_names or ()
        for i, (want, have) in enumerate(zip(names, got, strict=False)):
            if want != have:
                return (
                    f"features: column {i} is {have!r}, the model {self.version} expects "
                    f"{want!r} (schema {self.features.schema if self.features else '?'})"
                )
        return f"features: got {len(got)} named columns, {self._expected()}"

    def predict_batch(self, features: object) -> F64:
        """Buckets for rows of features: an (n, 2) array of [capacity, refill_rate], finite
        and within the bounds (n = 0 gives an empty (0, 2) array)."""
        return self.predict_rows(self.rows(features).X)

    def predict(self, features: object) -> tuple[F64, F64]:
        """Capacities and refill rates, one per row (the simulator's ``BucketModel``)."""
        out = self.predict_batch(features)
        return np.ascontiguousarray(out[:, 0]), np.ascontiguousarray(out[:, 1])

    def predict_rows(self, x: F64) -> F64:
        """Buckets for rows already coerced by :meth:`rows` (float64, (n, n_features))."""
        if x.shape[0] == 0:
            return np.empty((0, 2))
        if self.features is not None:
            inputs = self.features.transform(x)
        else:
            inputs = np.nan_to_num(x, nan=0.0, posinf=BARE_INPUT_CLIP, neginf=-BARE_INPUT_CLIP)
            np.clip(inputs, -BARE_INPUT_CLIP, BARE_INPUT_CLIP, out=inputs)
            inputs = inputs.astype(np.float32)
        raw = self.network.forward(inputs)
        order = [self.output.names.index(name) for name in OUTPUT_NAMES]
        y = raw[:, order].astype(np.float64)
        with np.errstate(all="ignore"):
            if self.output.transform == "exp":
                np.exp(y, out=y)
            elif self.output.transform == "expm1":
                np.expm1(y, out=y)
            y *= np.array([self.calibration.factors[name] for name in OUTPUT_NAMES])
        return self.bounds.clamp(y)


def _sibling_manifest(path: Path) -> bool:
    """Whether ``path`` sits in an artifact directory (a manifest of our format beside it)."""
    manifest = path.parent / MANIFEST
    try:
        body = json.loads(manifest.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("format") == FORMAT


def _from_artifact(directory: Path, bounds: OutputBounds) -> BucketPredictor:
    artifact = load_artifact(directory)
    m = artifact.manifest
    return BucketPredictor(
        network=artifact.network,
        features=m.features,
        output=m.output,
        calibration=m.calibration,
        bounds=bounds,
        version=m.version,
        source=directory,
        manifest=m,
    )


def _bare_weights(path: Path) -> tuple[dict[str, npt.NDArray[Any]], bytes]:
    try:
        content = path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: no such file", reason="missing") from exc
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read: {exc}", reason="missing") from exc
    looks_safetensors = len(content) > 8 and content[8:9] == b"{"
    if path.suffix == ".safetensors" or (content[:2] != b"PK" and looks_safetensors):
        from safetensors import SafetensorError
        from safetensors.numpy import load

        try:
            return load(content), content
        except (SafetensorError, ValueError, TypeError) as exc:
            raise ArtifactError(f"{path}: not a safetensors file: {exc}") from exc
    if content[:2] == b"PK" or path.suffix in (".pt", ".pth") or content[:1] == b"\x80":
        return parse_state_dict(content, source=str(path)), content
    raise ArtifactError(
        f"{path}: not a model: expected an artifact directory, its manifest.json, a "
        ".safetensors file or a .pt state_dict"
    )


def load_predictor(
    path: str | Path, *, bounds: OutputBounds | None = None, order: Sequence[str] | None = None
) -> BucketPredictor:
    """Load what ``path`` names (see the module docstring). ``bounds`` default to the
    settings'. Raises :class:`ArtifactError` (with a ``reason``) when it cannot be loaded."""
    path = Path(path)
    bounds = bounds or OutputBounds.from_settings()
    if path.is_dir():
        return _from_artifact(path, bounds)
    if path.name == MANIFEST:
        return _from_artifact(path.parent, bounds)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or directory", reason="missing")
    if _sibling_manifest(path):
        return _from_artifact(path.parent, bounds)
    weights, content = _bare_weights(path)
    network = mlp_from_state_dict(weights, order=order, source=str(path))
    if network.n_outputs != len(OUTPUT_NAMES):
        raise ArtifactError(
            f"{path}: the network gives {network.n_outputs} outputs per row; a bucket model "
            "gives 2 (capacity, refill_rate)"
        )
    return BucketPredictor(
        network=network,
        features=None,
        output=OutputSpec(transform="identity"),
        calibration=Calibration(),
        bounds=bounds,
        version=f"{path.name}@sha256:{sha256_bytes(content)[:12]}",
        source=path,
    )


def load_bucket_model(path: Path) -> BucketPredictor:
    """The simulator's model hook (``openclaw simulate --policy PATH``): ``predict(frame)``
    gives a capacity and a refill rate per feature row."""
    return load_predictor(path)
