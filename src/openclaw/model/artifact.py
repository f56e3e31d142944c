"""Model artifacts: a directory ``model-YYYYMMDD[-N]`` that holds everything needed to run a
model and to know where it came from, checked byte for byte when loaded.

Layout::

    model-20250801/
      manifest.json         what follows, and the sha256 of every other file
      weights.safetensors   the weights (safetensors: tensors and nothing else, read with NumPy)
      model.pt              the same weights as a plain PyTorch state_dict, for tools that want
                            one (written when torch is installed; never read by serving)

``manifest.json`` (format ``openclaw-model-1``)::

    format            "openclaw-model-1"
    version           "model-20250801" (the directory's name once registered)
    created_at        ISO 8601 UTC
    code_revision     "openclaw 0.1.0 (git f771f01-dirty)": the code that trained it
    features          schema (FEATURE_SCHEMA_VERSION), columns in input order, each with its
                      normalisation: name, log1p (x -> sign(x) log(1 + |x|) first), mean, std
                      (z = (x - mean) / std), low/high (z is clipped to this range: the range
                      seen in training, so a spike a million times the usual or an infinity
                      gives what the most extreme training row gives; NaN is read as the
                      mean, z = 0)
    architecture      kind "mlp", layers in order (state_dict name, inputs, outputs, bias),
                      activation between layers (relu), dtype float32
    output            names of the two outputs in order (capacity, refill_rate) and their
                      transform: exp / expm1 (targets were log / log1p scaled) / identity
    calibration       method, factors per output (multiplied after the transform), the
                      coverage they state (the probability that the predicted bucket covers
                      the realised need, on the held-out slice), details
    data              training data window (start, end), row counts per split, details
    metrics           validation metrics, name -> number
    files             name -> {sha256, bytes} for every file but the manifest
    manifest_sha256   sha256 of the canonical JSON (sorted keys, no spaces) of all the above

Loading (:func:`load_artifact`) refuses a directory whose manifest does not match its own
checksum, whose files do not match theirs (or are missing, or not listed), or whose weights do
not match the architecture; it reads each file once and checks the bytes it then parses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import AwareDatetime, ConfigDict, TypeAdapter, ValidationError

from openclaw.errors import ArtifactError
from openclaw.model.network import MLP, mlp_from_state_dict

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

FORMAT: Final = "openclaw-model-1"
MANIFEST: Final = "manifest.json"
WEIGHTS: Final = "weights.safetensors"
STATE_DICT: Final = "model.pt"
OUTPUT_NAMES: Final = ("capacity", "refill_rate")
#: Clip range (in standard deviations) of a feature column that does not state its own.
DEFAULT_Z_CLIP: Final = 10.0
#: ``model-YYYYMMDD`` for the first version of a day, ``model-YYYYMMDD-N`` (N >= 2) after.
VERSION_RE: Final = re.compile(r"^model-(?P<day>\d{8})(?:-(?P<n>[1-9]\d*))?$")
_FILE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")

_STRICT: Final = ConfigDict(extra="forbid")


def _finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")


# -- the manifest -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeatureColumn:
    """One input column and its normalisation (see the module docstring)."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    name: str
    mean: float = 0.0
    std: float = 1.0
    log1p: bool = False
    low: float = -DEFAULT_Z_CLIP
    high: float = DEFAULT_Z_CLIP

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a feature column needs a name")
        for what in ("mean", "std", "low", "high"):
            _finite(getattr(self, what), f"{self.name}.{what}")
        if self.std <= 0:
            raise ValueError(f"{self.name}.std must be > 0, got {self.std}")
        if self.low > self.high:
            raise ValueError(f"{self.name}: low {self.low} above high {self.high}")


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """The model's inputs: a feature schema, and its columns in the order the network takes."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    schema: str
    columns: tuple[FeatureColumn, ...]

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError("a model takes at least one feature")
        names = self.names
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"feature names repeat: {', '.join(dup)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def transform(self, rows: npt.ArrayLike) -> F32:
        """Rows of raw features (n, len(columns)) to the network's inputs: log1p where asked,
        standardised, NaN to the mean, clipped to [low, high] (infinities included).

        In float32, the network's own precision, in place on one copy: it runs on every
        client at every window boundary (100,000 rows x 24 columns: a few milliseconds)."""
        with np.errstate(over="ignore"):  # beyond float32 is inf, which the clip handles
            z = np.array(rows, dtype=np.float32, copy=True)
        if z.ndim != 2 or z.shape[1] != len(self.columns):
            raise ValueError(f"expected rows of {len(self.columns)} features, got {z.shape}")
        cols = self.columns
        n = len(cols)
        log_mask = np.fromiter((c.log1p for c in cols), bool, n)
        scale = np.fromiter((1.0 / c.std for c in cols), np.float32, n)
        shift = np.fromiter((-c.mean / c.std for c in cols), np.float32, n)
        low = np.fromiter((c.low for c in cols), np.float32, n)
        high = np.fromiter((c.high for c in cols), np.float32, n)
        with np.errstate(all="ignore"):
            if log_mask.any():
                part = z if log_mask.all() else z[:, log_mask]
                sign = np.sign(part)
                np.abs(part, out=part)
                np.log1p(part, out=part)
                part *= sign
                if part is not z:
                    z[:, log_mask] = part
            z *= scale
            z += shift
        # NaN (unknown) reads as the training mean; the clip handles the infinities.
        np.nan_to_num(z, copy=False, nan=0.0, posinf=np.inf, neginf=-np.inf)
        np.clip(z, low, high, out=z)
        return z

    @classmethod
    def fit(
        cls,
        rows: npt.ArrayLike,
        names: Sequence[str],
        *,
        schema: str,
        log1p: Collection[str] = (),
    ) -> FeatureSpec:
        """The normalisation of training ``rows``: mean and std after log1p (std 1 for a
        constant column), and low/high the range of z seen, so inputs beyond what training
        saw are clipped to its edge. The trainer uses ``transform`` of the result to build its
        inputs, so training and serving normalise with the same code."""
        raw = np.asarray(rows, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(names) or raw.shape[0] == 0:
            raise ValueError(f"fit needs rows of {len(names)} features, got {raw.shape}")
        unknown = set(log1p) - set(names)
        if unknown:
            raise ValueError(f"log1p names unknown features: {', '.join(sorted(unknown))}")
        columns = []
        for i, name in enumerate(names):
            values = raw[:, i][np.isfinite(raw[:, i])]
            logged = name in log1p
            if logged:
                values = np.sign(values) * np.log1p(np.abs(values))
            mean = float(values.mean()) if values.size else 0.0
            std = float(values.std()) if values.size else 0.0
            std = std if std > 1e-12 and math.isfinite(std) else 1.0
            z = (values - mean) / std
            low = float(min(z.min(), 0.0)) if z.size else -DEFAULT_Z_CLIP
            high = float(max(z.max(), 0.0)) if z.size else DEFAULT_Z_CLIP
            columns.append(FeatureColumn(name, mean, std, logged, low, high))
        return cls(schema=schema, columns=tuple(columns))


@dataclass(frozen=True, slots=True)
class LayerSpec:
    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    name: str
    inputs: int
    outputs: int
    bias: bool = True


@dataclass(frozen=True, slots=True)
class Architecture:
    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    layers: tuple[LayerSpec, ...]
    activation: Literal["relu"] = "relu"
    kind: Literal["mlp"] = "mlp"
    dtype: Literal["float32"] = "float32"

    @classmethod
    def of(cls, network: MLP) -> Architecture:
        return cls(
            layers=tuple(
                LayerSpec(layer.name, layer.n_in, layer.n_out, layer.bias is not None)
                for layer in network.layers
            ),
            activation="relu",
        )


Transform = Literal["exp", "expm1", "identity"]


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """What the network's two outputs are and how they become tokens and tokens per second."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    names: tuple[str, str] = OUTPUT_NAMES
    transform: Transform = "expm1"

    def __post_init__(self) -> None:
        if sorted(self.names) != sorted(OUTPUT_NAMES):
            raise ValueError(f"outputs must be capacity and refill_rate, got {self.names}")


@dataclass(frozen=True, slots=True)
class Calibration:
    """Multiplicative factors per output, applied after the output transform, and what they
    promise: ``coverage``, the probability that the calibrated bucket covers the realised
    need (on the held-out slice)."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    method: str = "none"
    factors: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(OUTPUT_NAMES, 1.0))
    coverage: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if sorted(self.factors) != sorted(OUTPUT_NAMES):
            raise ValueError(
                "calibration factors must name capacity and refill_rate, got "
                f"{sorted(self.factors)}"
            )
        for name, factor in self.factors.items():
            _finite(factor, f"factor of {name}")
            if factor <= 0:
                raise ValueError(f"factor of {name} must be > 0, got {factor}")
        if self.coverage is not None and not 0 < self.coverage <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {self.coverage}")


@dataclass(frozen=True, slots=True)
class DataWindow:
    """What the model was trained on: the time window of the data, rows per split."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    rows: Mapping[str, int] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(n < 0 for n in self.rows.values()):
            raise ValueError("row counts must be >= 0")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"data window starts ({self.start}) after it ends ({self.end})")


@dataclass(frozen=True, slots=True)
class FileEntry:
    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    sha256: str
    bytes: int

    def __post_init__(self) -> None:
        if not _SHA256.match(self.sha256):
            raise ValueError(f"not a sha256 hex digest: {self.sha256!r}")
        if self.bytes < 0:
            raise ValueError("a file size is >= 0")


@dataclass(frozen=True, slots=True)
class Manifest:
    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    format: Literal["openclaw-model-1"]
    version: str
    created_at: AwareDatetime
    code_revision: str
    features: FeatureSpec
    architecture: Architecture
    output: OutputSpec
    calibration: Calibration
    data: DataWindow
    metrics: Mapping[str, float | None]
    files: Mapping[str, FileEntry]

    def __post_init__(self) -> None:
        check_version(self.version)
        for name, value in self.metrics.items():
            if value is not None:
                _finite(value, f"metric {name}")
        if WEIGHTS not in self.files:
            raise ValueError(f"files must list {WEIGHTS}")
        for name in self.files:
            if name == MANIFEST or not _FILE_NAME.match(name):
                raise ValueError(f"not an artifact file name: {name!r}")
        layers = self.architecture.layers
        if not layers:
            raise ValueError("architecture has no layers")
        if layers[0].inputs != len(self.features.columns):
            raise ValueError(
                f"the network takes {layers[0].inputs} inputs, features lists "
                f"{len(self.features.columns)} columns"
            )
        if layers[-1].outputs != len(OUTPUT_NAMES):
            raise ValueError(f"the network gives {layers[-1].outputs} outputs, not 2")

    def to_json(self) -> dict[str, Any]:
        """The manifest as written, ``manifest_sha256`` included."""
        body: dict[str, Any] = _manifest_adapter().dump_python(self, mode="json")
        body["manifest_sha256"] = manifest_checksum(body)
        return body


@functools.cache
def _manifest_adapter() -> TypeAdapter[Manifest]:
    return TypeAdapter(Manifest)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def manifest_checksum(body: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a manifest's fields (``manifest_sha256`` left out)."""
    fields = {k: v for k, v in body.items() if k != "manifest_sha256"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_manifest(data: bytes, *, source: str) -> Manifest:
    """A manifest from the bytes of ``manifest.json``, its own checksum verified."""
    try:
        body = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ArtifactError(f"{source}: not a JSON object")
    claimed = body.pop("manifest_sha256", None)
    if not isinstance(claimed, str):
        raise ArtifactError(f"{source}: no manifest_sha256", reason="checksum")
    actual = manifest_checksum(body)
    if claimed != actual:
        raise ArtifactError(
            f"{source}: checksum mismatch: manifest_sha256 says {claimed}, its content hashes "
            f"to {actual} (edited or corrupt); refusing to load",
            reason="checksum",
        )
    if body.get("format") != FORMAT:
        raise ArtifactError(f"{source}: format {body.get('format')!r}, this reader knows {FORMAT}")
    try:
        return _manifest_adapter().validate_python(body)
    except ValidationError as exc:
        raise ArtifactError(f"{source}: {_describe(exc)}") from exc


# -- versions -------------------------------------------------------------------------------


def parse_version(version: str) -> tuple[dt.date, int]:
    """``model-20250801-3`` -> (2025-08-01, 3); the first of a day is N = 1."""
    match = VERSION_RE.match(version)
    if match is None or match["n"] == "1":
        raise ValueError(
            f"not a model version (model-YYYYMMDD or model-YYYYMMDD-N, N >= 2): {version!r}"
        )
    try:
        day = dt.datetime.strptime(match["day"], "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"not a model version (no such date): {version!r}") from None
    return day, int(match["n"] or 1)


def check_version(version: str) -> str:
    parse_version(version)
    return version


def is_version(name: str) -> bool:
    try:
        parse_version(name)
    except ValueError:
        return False
    return True


def version_key(version: str) -> tuple[dt.date, int]:
    """Sorts versions by day, then by N."""
    return parse_version(version)


def version_name(day: dt.date, n: int = 1) -> str:
    return f"model-{day:%Y%m%d}" + (f"-{n}" if n > 1 else "")


def next_version(taken: Iterable[str], day: dt.date) -> str:
    """The next version of ``day`` after every one in ``taken`` (never one taken before, even
    if since deleted: a version names one model forever)."""
    used = [n for d, n in (parse_version(v) for v in taken if is_version(v)) if d == day]
    return version_name(day, max(used, default=0) + 1)


def code_revision() -> str:
    """The running code: the package version, and ``git describe`` when the package sits in
    a git checkout (an editable install), so a model names the commit that trained it."""
    from openclaw import __version__

    revision = f"openclaw {__version__}"
    git = shutil.which("git")
    if git is None:
        return revision
    try:
        out = subprocess.run(  # noqa: S603 (a fixed command, no input from outside)
            [git, "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return revision
    described = out.stdout.strip()
    return f"{revision} (git {described})" if out.returncode == 0 and described else revision


# -- writing and loading ------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Artifact:
    """A loaded, verified artifact: its manifest and its network."""

    directory: Path
    manifest: Manifest
    network: MLP

    @property
    def version(self) -> str:
        return self.manifest.version


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _write_state_dict_pt(weights: Mapping[str, F32], path: Path) -> None:
    import collections

    import torch

    state = collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in weights.items())
    torch.save(state, path)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (temp file, fsync, rename)."""
    text = json.dumps(manifest.to_json(), indent=2, allow_nan=False) + "\n"
    tmp = directory / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(directory / MANIFEST)


def _network_for(
    weights: Mapping[str, npt.ArrayLike], features: FeatureSpec, order: Sequence[str] | None
) -> MLP:
    network = mlp_from_state_dict(weights, order=order, source="weights")
    if network.n_inputs != len(features.columns):
        raise ArtifactError(
            f"the network takes {network.n_inputs} inputs, the feature spec names "
            f"{len(features.columns)}"
        )
    if network.n_outputs != len(OUTPUT_NAMES):
        raise ArtifactError(f"the network gives {network.n_outputs} outputs, a bucket model 2")
    return network


def _check_target(
    directory: Path, extra_files: Mapping[str, Path] | None, created_at: dt.datetime | None
) -> dict[str, Path]:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ArtifactError(f"{directory}: exists and is not an empty directory")
    if created_at is not None and created_at.tzinfo is None:
        raise ArtifactError("created_at must carry a time zone (UTC)")
    extras = dict(extra_files or {})
    for name in extras:
        if name in (MANIFEST, WEIGHTS, STATE_DICT) or not _FILE_NAME.match(name):
            raise ArtifactError(f"extra file name {name!r} is reserved or not a plain file name")
    return extras


def write_artifact(
    directory: Path,
    weights: Mapping[str, npt.ArrayLike],
    *,
    features: FeatureSpec,
    calibration: Calibration | None = None,
    output: OutputSpec | None = None,
    data: DataWindow | None = None,
    metrics: Mapping[str, float | None] | None = None,
    layer_order: Sequence[str] | None = None,
    version: str | None = None,
    created_at: dt.datetime | None = None,
    revision: str | None = None,
    write_pt: bool | None = None,
    extra_files: Mapping[str, Path] | None = None,
) -> Artifact:
    """Write an artifact into ``directory`` (which must not exist, or be empty) and return it
    loaded back, checksums verified.

    ``weights``: a state_dict of linear layers as NumPy arrays (``"net.0.weight"`` (out, in),
    ``"net.0.bias"``), run in ``layer_order`` or the natural order of the names; stored as
    float32. ``version`` defaults to the directory's name. ``write_pt``: also write
    ``model.pt`` (default: when torch is installed). ``extra_files`` (a learning curve, a
    report) are copied in and checksummed like the rest. The directory appears whole or not
    at all: everything is written to a temporary sibling first, then renamed.
    """
    version = check_version(version or directory.name)
    network = _network_for(weights, features, layer_order)
    extras = _check_target(directory, extra_files, created_at)

    from safetensors.numpy import save_file

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        state = network.state_dict()
        save_file(state, str(tmp / WEIGHTS))
        if write_pt if write_pt is not None else _torch_available():
            _write_state_dict_pt(state, tmp / STATE_DICT)
        for name, src in extras.items():
            shutil.copyfile(src, tmp / name)
        files = {}
        for path in sorted(tmp.iterdir()):
            content = path.read_bytes()
            files[path.name] = FileEntry(sha256=sha256_bytes(content), bytes=len(content))
        try:
            manifest = Manifest(
                format=FORMAT,
                version=version,
                created_at=created_at or dt.datetime.now(dt.UTC),
                code_revision=revision or code_revision(),
                features=features,
                architecture=Architecture.of(network),
                output=output or OutputSpec(),
                calibration=calibration or Calibration(),
                data=data or DataWindow(),
                metrics=dict(metrics or {}),
                files=files,
            )
            write_manifest(tmp, manifest)
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{directory}: manifest: {exc}") from exc
        for path in tmp.iterdir():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        if directory.exists():
            directory.rmdir()
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_artifact(directory)


def _read(path: Path, *, source: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"{source}: missing", reason="missing") from exc
    except OSError as exc:
        raise ArtifactError(f"{source}: cannot be read: {exc}", reason="missing") from exc


def load_artifact(directory: Path) -> Artifact:
    """Load an artifact directory, verifying the manifest's checksum and every file's; raises
    :class:`ArtifactError` naming the file and what did not match."""
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such artifact directory", reason="missing")
    manifest = parse_manifest(
        _read(directory / MANIFEST, source=str(directory / MANIFEST)),
        source=str(directory / MANIFEST),
    )
    present = {p.name for p in directory.iterdir()} - {MANIFEST}
    unlisted = sorted(present - set(manifest.files))
    if unlisted:
        raise ArtifactError(
            f"{directory}: files not in the manifest: {', '.join(unlisted)} (an artifact is "
            "immutable; refusing to load)",
            reason="checksum",
        )
    contents: dict[str, bytes] = {}
    for name, entry in manifest.files.items():
        source = str(directory / name)
        content = _read(directory / name, source=source)
        digest = sha256_bytes(content)
        if len(content) != entry.bytes or digest != entry.sha256:
            raise ArtifactError(
                f"{source}: checksum mismatch: the manifest says sha256 {entry.sha256} "
                f"({entry.bytes} bytes), the file has {digest} ({len(content)} bytes); "
                "refusing to load",
                reason="checksum",
            )
        contents[name] = content
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        weights = load(contents[WEIGHTS])
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{directory / WEIGHTS}: not a safetensors file: {exc}") from exc
    arch = manifest.architecture
    network = mlp_from_state_dict(
        weights,
        order=[layer.name for layer in arch.layers],
        activation=arch.activation,
        source=str(directory / WEIGHTS),
    )
    for spec, layer in zip(arch.layers, network.layers, strict=True):
        if (spec.inputs, spec.outputs, spec.bias) != (
            layer.n_in,
            layer.n_out,
            layer.bias is not None,
        ):
            raise ArtifactError(
                f"{directory / WEIGHTS}: layer {spec.name!r} is {layer.n_in} -> {layer.n_out}"
                f"{'' if layer.bias is not None else ' without bias'}; the manifest says "
                f"{spec.inputs} -> {spec.outputs}{'' if spec.bias else ' without bias'}"
            )
    return Artifact(directory=directory, manifest=manifest, network=network)


def with_version(directory: Path, version: str) -> Manifest:
    """Rewrite an (unregistered, writable) artifact's manifest under a new version: the
    registry names what it registers. Files and their checksums are unchanged."""
    manifest = dataclasses.replace(
        load_artifact(directory).manifest, version=check_version(version)
    )
    write_manifest(directory, manifest)
    return manifest
