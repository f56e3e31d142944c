"""Model artifacts for tests and benchmarks: real files, small random networks."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from openclaw.features.core import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from openclaw.model.artifact import (
    Artifact,
    Calibration,
    DataWindow,
    FeatureColumn,
    FeatureSpec,
    OutputSpec,
    write_artifact,
)

F32 = npt.NDArray[np.float32]

#: The benchmark's network: every feature in, two hidden layers of 64, (capacity, rate) out.
BENCH_SIZES = (len(FEATURE_NAMES), 64, 64, 2)


def mlp_weights(sizes: Sequence[int], *, seed: int = 0) -> dict[str, F32]:
    """A random state_dict named as ``nn.Sequential(Linear, ReLU, Linear, ...)`` names it
    (linear layers at the even indices 0, 2, 4, ...), He-initialised."""
    rng = np.random.default_rng(seed)
    out: dict[str, F32] = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        scale = math.sqrt(2.0 / n_in)
        out[f"{2 * i}.weight"] = rng.normal(0.0, scale, (n_out, n_in)).astype(np.float32)
        out[f"{2 * i}.bias"] = rng.normal(0.0, 0.1, n_out).astype(np.float32)
    return out


def feature_spec(n: int = len(FEATURE_NAMES), *, clip: float = 5.0) -> FeatureSpec:
    """The feature schema's columns (or ``x0..x{n-1}``), log1p on, standardised around 1."""
    names = FEATURE_NAMES if n == len(FEATURE_NAMES) else tuple(f"x{i}" for i in range(n))
    return FeatureSpec(
        schema=FEATURE_SCHEMA_VERSION if n == len(FEATURE_NAMES) else "test",
        columns=tuple(
            FeatureColumn(name, mean=1.0, std=2.0, log1p=True, low=-clip, high=clip)
            for name in names
        ),
    )


def build_artifact(
    directory: Path,
    *,
    sizes: Sequence[int] = BENCH_SIZES,
    seed: int = 0,
    write_pt: bool = False,
    calibration: Calibration | None = None,
    output: OutputSpec | None = None,
    created_at: dt.datetime | None = None,
    metrics: dict[str, float | None] | None = None,
    **kwargs: Any,
) -> Artifact:
    """A complete artifact of a random network in ``directory`` (named model-YYYYMMDD...)."""
    return write_artifact(
        directory,
        mlp_weights(sizes, seed=seed),
        features=feature_spec(sizes[0]),
        calibration=calibration
        or Calibration(
            method="quantile-factor",
            factors={"capacity": 1.2, "refill_rate": 1.1},
            coverage=0.99,
        ),
        output=output,
        data=DataWindow(
            start=dt.datetime(2025, 8, 1, tzinfo=dt.UTC),
            end=dt.datetime(2025, 8, 8, tzinfo=dt.UTC),
            rows={"train": 1000, "calibration": 200, "validation": 300},
        ),
        metrics=metrics if metrics is not None else {"pinball": 0.12, "coverage": 0.991},
        created_at=created_at or dt.datetime(2025, 8, 9, 12, 0, tzinfo=dt.UTC),
        revision="test",
        write_pt=write_pt,
        **kwargs,
    )
