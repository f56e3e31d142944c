"""The model the service serves, swapped when an alias moves, kept when the new one is bad.

:class:`ModelHolder` watches one alias of a registry (``champion`` by default). Each
:meth:`~ModelHolder.reload_if_changed` (the service calls it on a timer or at every window
boundary) looks at the alias file; when the alias names another version, that version is
loaded and verified, then swapped in with one assignment (a reader holding the old predictor
finishes with it). When loading fails (the version is missing, a checksum does not match, the
manifest does not parse, the alias file is unreadable) the current model keeps serving, the
failure is counted in ``openclaw_model_load_failures_total{reason}`` and logged with why, and
the same version is not tried again before ``retry_interval_s`` (so a bad promotion costs one
log line per interval, not one per check).

One task calls ``reload_if_changed``; any thread may read :attr:`~ModelHolder.model` at any
time (a reference swap: it sees the old model or the new one, never a mix).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter

from openclaw.clock import Clock, monotonic
from openclaw.errors import ArtifactError, RegistryError
from openclaw.model.predictor import BucketPredictor, OutputBounds, load_predictor
from openclaw.model.registry import Registry

LOG: Final = logging.getLogger("openclaw.model")
#: Reasons a load failure is counted by (ArtifactError.reason, and ``alias``).
FAILURE_REASONS: Final = ("missing", "checksum", "invalid", "unsafe", "alias")

Loader = Callable[[Path, OutputBounds], BucketPredictor]


def _load(path: Path, bounds: OutputBounds) -> BucketPredictor:
    return load_predictor(path, bounds=bounds)


class ModelHolder:
    """Holds the predictor of ``alias`` in ``registry``; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        *,
        metrics: CollectorRegistry,
        bounds: OutputBounds,
        alias: str = "champion",
        clock: Clock = monotonic,
        retry_interval_s: float = 30.0,
        logger: logging.Logger = LOG,
        loader: Loader = _load,
    ) -> None:
        self.registry = registry
        self.alias = alias
        self.bounds = bounds
        self._clock = clock
        self._retry_interval_s = retry_interval_s
        self._log = logger
        self._loader = loader
        self._model: BucketPredictor | None = None
        self._alias_stat: tuple[int, int, int] | None = None
        self._failed: tuple[str | None, float] | None = None
        self.failures = Counter(
            "openclaw_model_load_failures",
            "Model loads that failed (the current model kept serving), by reason.",
            ["reason"],
            registry=metrics,
        )
        for reason in FAILURE_REASONS:
            self.failures.labels(reason)
        self.reloads = Counter(
            "openclaw_model_reloads",
            "Models loaded and swapped in (the first load included).",
            registry=metrics,
        )

    @property
    def model(self) -> BucketPredictor | None:
        """The model serving now (None until one loads)."""
        return self._model

    @property
    def version(self) -> str | None:
        model = self._model
        return None if model is None else model.version

    def reload_if_changed(self) -> bool:
        """Load the version the alias names if it is not the one serving; True when a new
        model was swapped in. Never raises for a bad artifact: see the module docstring."""
        signature = self.registry.alias_stamp()
        # The alias has not moved: nothing to do, unless a failed load is due a retry.
        if signature == self._alias_stat and (
            self._failed is None or self._clock() - self._failed[1] < self._retry_interval_s
        ):
            return False
        self._alias_stat = signature
        try:
            target = self.registry.alias(self.alias)
        except RegistryError as exc:
            return self._fail("alias", None, str(exc))
        if target is None or target == self.version:
            self._failed = None
            return False
        try:
            model = self._loader(self.registry.path_of(target), self.bounds)
        except ArtifactError as exc:
            return self._fail(exc.reason, target, str(exc))
        if model.version != target:
            return self._fail(
                "invalid", target, f"{target}: its manifest says version {model.version}"
            )
        previous = self.version
        self._model = model
        self._failed = None
        self.reloads.inc()
        self._log.info("model %s: now serving %s (was %s)", self.alias, target, previous or "none")
        return True

    def _fail(self, reason: str, target: str | None, why: str) -> bool:
        self.failures.labels(reason if reason in FAILURE_REASONS else "invalid").inc()
        self._failed = (target, self._clock())
        self._log.warning(
            "model %s: cannot load %s (%s): %s; still serving %s",
            self.alias,
            target or "the alias",
            reason,
            why,
            self.version or "no model",
        )
        return False
