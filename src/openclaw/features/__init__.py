"""Features and labels per (client, window): the arithmetic (``core``), from a telemetry store
(``offline``) and from the service's rolling state (``online``)."""

from openclaw.features.core import (
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    FeatureFrame,
    envelope,
    sliding_peak_count,
)

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_SCHEMA_VERSION",
    "FeatureFrame",
    "envelope",
    "sliding_peak_count",
]
