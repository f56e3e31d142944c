"""The Rating API service: HTTP/JSON decisions, headers and metrics."""

from __future__ import annotations

from openclaw.service.app import create_app

__all__ = ["create_app"]
