"""The one exception tree. Backend errors are wrapped with ``raise ... from exc``."""

from __future__ import annotations


class OpenClawError(Exception):
    """Base of every error OpenClaw raises on purpose."""


class ConfigError(OpenClawError, ValueError):
    """A setting, URL or configuration file is invalid."""


class InvalidParamsError(OpenClawError, ValueError):
    """Bucket parameters or a request cost are not usable numbers."""


class StoreError(OpenClawError):
    """A bucket store failed in a way the failure mode does not cover (a bug, a bad reply)."""


class StoreUnavailableError(StoreError):
    """The store's server cannot be reached or did not answer within its timeout."""


class RequestError(OpenClawError, ValueError):
    """A request to the service is malformed, too large, or asks for something absurd.

    ``status`` is the HTTP status it is answered with and ``code`` the machine-readable
    ``error`` of the JSON body; the message is its human-readable ``reason``.
    """

    def __init__(self, reason: str, *, status: int = 400, code: str = "bad_request") -> None:
        super().__init__(reason)
        self.status = status
        self.code = code


class EventRejected(OpenClawError, ValueError):  # noqa: N818 (an outcome, counted, not a fault)
    """A telemetry event is invalid. ``reason`` is a code from ``telemetry.events.RejectReason``
    (sources count rejections by it); the message says what exactly was wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class TelemetryStoreError(OpenClawError):
    """A telemetry store failed (unreachable, a bad reply, a schema it cannot create)."""


class IngestError(OpenClawError, ValueError):
    """An ingest source cannot be read at all (a missing file, an unknown format, a bad URL).

    Bad lines inside a readable source are rejections, counted and reported, not this error.
    """


class TelemetryQueueFull(OpenClawError):  # noqa: N818 (back-pressure, not a fault)
    """The telemetry queue cannot take a batch now (it is full, or closed for shutdown).

    Nothing of the refused batch was accepted: the sender retries it after ``retry_after_s``
    (HTTP answers 503 with ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ArtifactError(OpenClawError):
    """A model artifact cannot be loaded safely: missing, a checksum that does not match, a
    manifest or weights file that does not parse, or a ``.pt`` that would need code to load.

    ``reason`` is a short code (``missing``, ``checksum``, ``invalid``, ``unsafe``) that load
    failures are counted by; the message says what exactly was wrong, naming the file."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class ModelError(OpenClawError, ValueError):
    """Features a model cannot take (a shape or width that does not fit, not numbers)."""


class RegistryError(OpenClawError):
    """A model registry operation is refused (a version that exists or does not, an unknown
    alias, nothing to roll back to)."""


class TrainingError(OpenClawError, ValueError):
    """A model cannot be trained as asked: too little data for a split or for the stated
    coverage, a bad training option."""


class CanaryError(OpenClawError):
    """A canary cannot be started, read or stopped as asked: one is already running, the
    challenger does not load, no admin token, or the service's admin API refused."""


class PipelineError(OpenClawError):
    """A retraining pipeline step cannot run or stopped: missing inputs, a failed validation
    gate (the reason says which check), a step that failed before."""


class GateRejected(PipelineError):  # noqa: N818 (an outcome of the gate, not a fault)
    """The pipeline's validation gate failed the new model: the message names every failed
    check and by how much (``openclaw pipeline`` exits 1, as ``openclaw validate`` does)."""
