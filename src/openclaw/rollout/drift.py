"""Feature drift: the population stability index (PSI) of recent feature rows against a
retained baseline distribution.

The baseline of a feature is its deciles and the share of baseline rows in each bin they cut:
interior edges are the 10th..90th percentiles of the baseline values (duplicates dropped, so
a feature that is mostly zero or constant gets fewer, wider bins rather than empty ones);
bins are right-closed, ``(-inf, e1], (e1, e2], ..., (ek, inf)``. The recent rows are counted
into the same bins and

    PSI = sum over bins of (a - e) ln(a / e)

with ``e`` the baseline share and ``a`` the recent share of a bin, both floored at
:data:`EPSILON` so that a bin empty on one side adds a large but finite term. Read it the
usual way: below 0.1 no real change, 0.1 to 0.25 a moderate shift, above 0.25 a significant
one (:data:`SIGNIFICANT`).

Non-finite values are left out on both sides; a feature with no finite recent value has no
PSI (it is absent from the result, not 0).

The functions here are pure (arrays in, numbers out), except the two small readers and writers
of the JSON files at the end, which the pipeline and the service share.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from openclaw.errors import PipelineError

F64 = npt.NDArray[np.float64]

#: Floor of a bin's share in the PSI sum (an empty bin would make ln(a / e) infinite).
EPSILON: Final = 1e-4
#: Quantiles whose values cut the baseline into bins: the nine interior deciles.
DECILES: Final = tuple(k / 10 for k in range(1, 10))
#: PSI above which a shift is called significant (the customary reading of the index).
SIGNIFICANT: Final = 0.25
#: PSI above which a shift is called moderate.
MODERATE: Final = 0.1
DAY_US: Final = 86_400_000_000
BASELINE_FORMAT: Final = "openclaw-drift-baseline-1"
DRIFT_FORMAT: Final = "openclaw-drift-1"
DRIFT_FILE: Final = "drift.json"


@dataclass(frozen=True, slots=True)
class Bins:
    """One feature's baseline: interior edges (ascending, distinct) and the share of the
    baseline rows in each of the ``len(edges) + 1`` bins."""

    edges: tuple[float, ...]
    proportions: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.proportions) != len(self.edges) + 1:
            raise ValueError(
                f"{len(self.edges)} edges need {len(self.edges) + 1} proportions, "
                f"got {len(self.proportions)}"
            )
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("bin edges must be strictly ascending")


def _finite(values: npt.ArrayLike) -> F64:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def decile_edges(values: npt.ArrayLike) -> F64:
    """The distinct interior deciles of the finite ``values`` (empty when there are none)."""
    finite = _finite(values)
    if finite.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(finite, DECILES))


def bin_shares(values: npt.ArrayLike, edges: npt.ArrayLike) -> F64:
    """The share of the finite ``values`` in each right-closed bin the ``edges`` cut (all
    zeros when there is no finite value)."""
    finite = _finite(values)
    cuts = np.asarray(edges, dtype=np.float64)
    counts = np.bincount(np.searchsorted(cuts, finite, side="left"), minlength=cuts.size + 1)
    total = counts.sum()
    if total == 0:
        return np.zeros(cuts.size + 1)
    return counts.astype(np.float64) / float(total)


def fit_bins(values: npt.ArrayLike) -> Bins:
    """A feature's baseline from its values."""
    edges = decile_edges(values)
    shares = bin_shares(values, edges)
    return Bins(tuple(float(e) for e in edges), tuple(float(s) for s in shares))


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, *, epsilon: float = EPSILON) -> float:
    """``sum((a - e) ln(a / e))`` over bins, both shares floored at ``epsilon``."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    if e.shape != a.shape:
        raise ValueError(f"shares of {e.shape} and {a.shape} bins cannot be compared")
    return float(np.sum((a - e) * np.log(a / e)))


def fit_baseline(x: npt.ArrayLike, names: Sequence[str]) -> dict[str, Bins]:
    """Bins of every column of ``x`` (rows x features, named ``names``)."""
    matrix = np.asarray(x, dtype=np.float64).reshape(-1, len(names))
    return {name: fit_bins(matrix[:, i]) for i, name in enumerate(names)}


def feature_psi(
    baseline: Mapping[str, Bins], x: npt.ArrayLike, names: Sequence[str]
) -> dict[str, float]:
    """PSI of each feature the baseline knows, for rows ``x`` (rows x features, named
    ``names``); features without a finite value in ``x`` are left out."""
    matrix = np.asarray(x, dtype=np.float64).reshape(-1, len(names))
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        bins = baseline.get(name)
        if bins is None or _finite(matrix[:, i]).size == 0:
            continue
        out[name] = psi(bins.proportions, bin_shares(matrix[:, i], bins.edges))
    return out


def worst(values: Mapping[str, float]) -> tuple[str, float] | None:
    """The feature with the largest PSI and that PSI (None for no feature)."""
    if not values:
        return None
    name = max(values, key=lambda k: values[k])
    return name, values[name]


def latest_day(since_us: int, until_us: int) -> tuple[int, int, bool]:
    """The span drift is measured on: the last whole UTC day inside ``[since_us, until_us)``
    (``full`` True), else, when the data holds no whole day, its last 24 hours (all of it when
    shorter; ``full`` False)."""
    day_end = until_us // DAY_US * DAY_US
    if day_end - DAY_US >= since_us:
        return day_end - DAY_US, day_end, True
    return max(since_us, until_us - DAY_US), until_us, False


def in_span(starts_us: npt.ArrayLike, window_us: int, span: tuple[int, int]) -> npt.NDArray[Any]:
    """Mask of the windows (by start) lying wholly inside ``span``."""
    starts = np.asarray(starts_us, dtype=np.int64)
    lo, hi = span
    mask: npt.NDArray[Any] = (starts >= lo) & (starts + window_us <= hi)
    return mask


# -- the files ---------------------------------------------------------------------------------


def bins_to_json(baseline: Mapping[str, Bins]) -> dict[str, Any]:
    return {
        name: {"edges": list(b.edges), "proportions": list(b.proportions)}
        for name, b in baseline.items()
    }


def bins_from_json(body: Mapping[str, Any], *, where: str) -> dict[str, Bins]:
    try:
        return {
            str(name): Bins(
                tuple(float(e) for e in value["edges"]),
                tuple(float(p) for p in value["proportions"]),
            )
            for name, value in body.items()
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise PipelineError(f"{where}: not a drift baseline: {exc}") from exc


def write_json(path: Path, body: Mapping[str, Any]) -> None:
    """Write ``body`` as JSON atomically (a temporary file renamed over ``path``): a reader,
    the service among them, sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(body, fh, indent=2, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file; None when it does not exist, PipelineError when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise PipelineError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise PipelineError(f"{path}: not a JSON object")
    return body


def drift_document(
    values: Mapping[str, float], *, run_id: str, computed_at: dt.datetime, **details: Any
) -> dict[str, Any]:
    """The body of ``PIPELINE_DIR/drift.json``: the latest PSI per feature, and its context."""
    top = worst(values)
    return {
        "format": DRIFT_FORMAT,
        "run": run_id,
        "computed_at": computed_at.isoformat().replace("+00:00", "Z"),
        "psi": dict(values),
        "max": None if top is None else top[1],
        "max_feature": None if top is None else top[0],
        **details,
    }


def read_drift(pipeline_dir: Path | str) -> dict[str, float] | None:
    """The latest PSI per feature the pipeline computed (``PIPELINE_DIR/drift.json``), or None
    when no run has computed one yet. PipelineError when the file is unreadable."""
    path = Path(pipeline_dir) / DRIFT_FILE
    body = read_json(path)
    if body is None:
        return None
    values = body.get("psi")
    if not isinstance(values, dict):
        raise PipelineError(f"{path}: no psi object")
    out: dict[str, float] = {}
    for name, value in values.items():
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise PipelineError(f"{path}: psi of {name!r} is {value!r}, not a number")
        out[str(name)] = float(value)
    return out
