"""The service in policy_mode "model" for tests: real artifacts in a real registry, telemetry
posted over HTTP on loopback into a DuckDB file, window boundaries from a FakeClock that the
service's own background task follows."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from openclaw.clock import FakeClock
from openclaw.model.registry import Registry
from openclaw.service.server import BackgroundServer, Built, build
from openclaw.settings import Settings

#: Window length of the tests' services, and a window start to begin at.
W: Final = 60.0
T0: Final = 29_233_333 * W
K: Final = int(T0 // W)
TOKEN: Final = "admin-token"  # noqa: S105 (the test services' token, not a secret)
AUTH: Final = {"Authorization": f"Bearer {TOKEN}"}


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def metric(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of the first sample ``name`` with ``labels`` in an exposition, or None."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


class LearnedService:
    """``policy`` (TOML) in ``tmp``, a registry and a DuckDB telemetry file beside it; the
    settings above, updated by ``extra``. :meth:`start` builds and serves it on loopback."""

    def __init__(self, tmp: Path, policy: str, **extra: Any) -> None:
        (tmp / "policy.toml").write_text(policy)
        values: dict[str, Any] = {
            "policy_mode": "model",
            "policy_path": tmp / "policy.toml",
            "model_registry_path": tmp / "models",
            "telemetry_url": f"duckdb://{tmp / 'events.duckdb'}",
            "telemetry_flush_interval_s": 0.05,
            "window_s": W,
            "label_horizon_s": 10.0,
            "policy_close_delay_s": 2.0,
            "admin_token": SecretStr(TOKEN),
        }
        values.update(extra)
        self.settings = Settings(**values)
        self.registry = Registry(self.settings.model_registry_path, user="test")
        self.clock = FakeClock(T0 + 5.0)
        self.tmp = tmp
        self._built: Built | None = None
        self._server: BackgroundServer | None = None
        self.http: httpx.Client | None = None

    def start(self) -> httpx.Client:
        self._built = build(self.settings, wall_clock=self.clock, policy_poll_s=0.01)
        self._server = BackgroundServer(self._built.app, self.settings).start()
        self.http = httpx.Client(base_url=self._server.url, timeout=10.0)
        return self.http

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url

    @property
    def built(self) -> Built:
        assert self._built is not None
        return self._built

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        if self._server is not None:
            self._server.stop()

    def post_ndjson(self, body: bytes) -> None:
        """Post telemetry and push it through the queue to the observers now."""
        assert self.http is not None
        answer = self.http.post(
            "/api/v1/telemetry", content=body, headers={"Content-Type": "application/x-ndjson"}
        )
        assert answer.status_code == 202, answer.text
        self.built.telemetry.flush()
