"""Bucket parameters from a model, in NumPy: the public entry point.

>>> capacity, refill_rate = predict_bucket_params("models/model-20250801", features)

``model_path``: an artifact directory, its ``manifest.json``, a ``.safetensors`` file or a
``.pt`` file holding a plain state_dict of linear layers (read without torch and without
running code from it), or a predictor already loaded with :func:`load_model` (load once,
predict many times: loading verifies checksums). How each is read, and how a bare state_dict
without a manifest is interpreted (inputs as given, outputs as (capacity, refill_rate)
directly): :mod:`openclaw.model.predictor`.

``features``: a NumPy array, a torch tensor (converted without importing torch), a list, or a
``FeatureFrame`` (its column names are checked against the model's).

The forms:

======================  ===============================================================
features                ``predict_bucket_params`` returns
======================  ===============================================================
1-D, one row            ``(capacity, refill_rate)``: two Python floats
2-D with one row        ``(capacity, refill_rate)``: two Python floats (e.g. a (1, 10) tensor)
2-D with n != 1 rows    ``(capacities, refill_rates)``: two float64 arrays of shape (n,)
empty (``[]``, (0, k))  two empty float64 arrays
======================  ===============================================================

:func:`predict_batch` always returns one (n, 2) array of [capacity, refill_rate] rows, for
callers that want one shape whatever n is. Every value is finite, non-negative and within the
settings' bounds (``model_min_capacity`` .. ``model_max_capacity``, ``model_min_refill_rate``
.. ``model_max_refill_rate``), whatever the input: NaN features read as the training mean,
infinite or absurd ones (a spike a million times the usual) as the most extreme value seen in
training. A shape that does not fit raises :class:`~openclaw.errors.ModelError` naming the
shape expected and the one got; a model that cannot be loaded raises
:class:`~openclaw.errors.ArtifactError`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from openclaw.model.predictor import BucketPredictor, OutputBounds, load_predictor

if TYPE_CHECKING:
    from openclaw.settings import Settings

F64 = npt.NDArray[np.float64]
ModelLike = str | os.PathLike[str] | BucketPredictor

__all__ = [
    "BucketPredictor",
    "OutputBounds",
    "load_model",
    "predict_batch",
    "predict_bucket_params",
]


def load_model(
    model_path: str | os.PathLike[str], *, settings: Settings | None = None
) -> BucketPredictor:
    """Load (and verify) a model once, for many predictions. Bounds come from ``settings``
    (default: ``Settings()``, i.e. the environment)."""
    return load_predictor(os.fspath(model_path), bounds=OutputBounds.from_settings(settings))


def _model(model: ModelLike, settings: Settings | None) -> BucketPredictor:
    if isinstance(model, BucketPredictor):
        return model
    return load_model(model, settings=settings)


def predict_batch(model: ModelLike, features: object, *, settings: Settings | None = None) -> F64:
    """An (n, 2) float64 array of [capacity, refill_rate], one row per feature row (a 1-D
    input is one row)."""
    return _model(model, settings).predict_batch(features)


def predict_bucket_params(
    model_path: ModelLike, features: object, *, settings: Settings | None = None
) -> tuple[float, float] | tuple[F64, F64]:
    """``(capacity, refill_rate)`` for one row of features: two finite, non-negative floats.
    Several rows give two arrays (see the module docstring for every form)."""
    predictor = _model(model_path, settings)
    rows = predictor.rows(features)
    out = predictor.predict_rows(rows.X)
    if rows.single:
        return float(out[0, 0]), float(out[0, 1])
    return np.ascontiguousarray(out[:, 0]), np.ascontiguousarray(out[:, 1])
