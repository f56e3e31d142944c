"""Model artifacts, their NumPy runtime, the registry and the holder that serves the champion.

``artifact``   the ``model-YYYYMMDD[-N]`` directory: manifest, safetensors weights, ``.pt``;
               written by :func:`write_artifact`, loaded (checksums verified) by
               :func:`load_artifact`
``network``    the MLP run in NumPy
``safe_pt``    ``.pt`` state_dicts read without torch and without running their pickle
``predictor``  features -> (capacity, refill_rate), clamped to the bounds
``registry``   immutable versions, champion/challenger aliases, audit log, rollback, prune
``holder``     the serving model, reloaded when its alias moves, kept when the new one fails

Nothing here imports torch (writing ``model.pt`` does, lazily, when torch is installed).
"""

from openclaw.model.artifact import (
    Artifact,
    Calibration,
    DataWindow,
    FeatureColumn,
    FeatureSpec,
    Manifest,
    OutputSpec,
    load_artifact,
    write_artifact,
)
from openclaw.model.holder import ModelHolder
from openclaw.model.network import MLP
from openclaw.model.predictor import (
    BucketPredictor,
    OutputBounds,
    load_bucket_model,
    load_predictor,
)
from openclaw.model.registry import Registry

__all__ = [
    "MLP",
    "Artifact",
    "BucketPredictor",
    "Calibration",
    "DataWindow",
    "FeatureColumn",
    "FeatureSpec",
    "Manifest",
    "ModelHolder",
    "OutputBounds",
    "OutputSpec",
    "Registry",
    "load_artifact",
    "load_bucket_model",
    "load_predictor",
    "write_artifact",
]
