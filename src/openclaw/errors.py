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
