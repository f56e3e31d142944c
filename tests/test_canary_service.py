"""The model canary end to end: the real service on loopback under steady load from client
threads, telemetry posted over HTTP, window boundaries from a FakeClock the service's own task
follows. A bad challenger is rolled back by itself (in shadow: never enforced), a good one is
promoted; not one client request fails (every answer is a 200) during either."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from openclaw.model.artifact import Calibration
from openclaw.service.server import BackgroundServer, build
from openclaw.settings import Settings
from openclaw.testing.cli import invoke
from openclaw.testing.learned import (
    AUTH,
    T0,
    TOKEN,
    K,
    LearnedService,
    W,
    metric,
    wait_for,
)
from openclaw.testing.models import build_artifact


class Ran:
    def __init__(self, *args: str) -> None:
        self.exit_code, out, err = invoke(*args)
        self.output = out + err


CLIENTS = [f"client-{i}" for i in range(24)]
EVENTS_PER_WINDOW = 30

POLICY = """
default_tier = "free"

[tiers.free]
limits = [{ capacity = 1000, refill_rate = 100 }]
bounds = { min_capacity = 1, max_capacity = 100000, max_refill_rate = 1000 }
"""


class Load:
    """Steady load: threads deciding for the clients round robin until stopped; every answer
    is kept by status code (a transport error counts as status 0)."""

    def __init__(self, url: str, *, threads: int = 2) -> None:
        self.url = url
        self.codes: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, offset: int) -> None:
        i = offset
        with httpx.Client(base_url=self.url, timeout=10.0) as http:
            while not self._stop.is_set():
                client = CLIENTS[i % len(CLIENTS)]
                i += len(self._threads)
                try:
                    answer = http.get("/api/v1/rate", params={"client_id": client})
                    code = answer.status_code
                    version = answer.json()["policy"]["version"] if code == 200 else "-"
                except httpx.HTTPError:
                    code, version = 0, "-"
                with self._lock:
                    self.codes[code] += 1
                    self.versions[version] += 1
                # ~100 decisions/s per thread: each client far below its bucket's refill
                time.sleep(0.01)

    def total(self) -> int:
        with self._lock:
            return sum(self.codes.values())

    def wait_more(self, n: int) -> None:
        """Let at least ``n`` more decisions happen (in the phase the canary is in now)."""
        target = self.total() + n
        wait_for(lambda: self.total() >= target)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


class Service(LearnedService):
    def __init__(self, tmp: Path) -> None:
        super().__init__(
            tmp,
            POLICY,
            enforce=True,
            governor_enabled=False,
            # What a bucket may be, whatever a model says: the good model's calibration
            # puts every client at this cap, which serves the load with room to spare.
            model_max_capacity=100.0,
            model_max_refill_rate=1.0,
            canary_interval_s=W,
            canary_shadow_intervals=1,
            canary_step_weight=25.0,
            canary_max_weight=50.0,
            canary_threshold=2,
        )
        self.window = K
        self.load: Load | None = None

    def register(self, name: str, *, factor: float, seed: int) -> str:
        built = build_artifact(
            self.tmp / name / "model-20250801",
            seed=seed,
            calibration=Calibration(
                method="quantile-factor",
                factors={"capacity": factor, "refill_rate": factor},
                coverage=0.99,
            ),
        )
        return self.registry.register(built.directory, reason=name)

    def window_passes(self) -> None:
        """Every client sends the same traffic in the current window (as telemetry), then the
        window closes and the service publishes the next one's table."""
        assert self.http is not None
        start = self.window * W + 1.0
        self.post_ndjson(
            b"\n".join(
                orjson.dumps(
                    {
                        "client_id": client,
                        "timestamp": start + i * 1.5,
                        "response_time_ms": 20.0,
                        "status_code": 200,
                    }
                )
                for client in CLIENTS
                for i in range(EVENTS_PER_WINDOW)
            )
        )
        if self.load is not None:
            self.load.wait_more(40)  # the load runs through every phase, not past it
        learned = self.built.learned
        assert learned is not None
        self.clock.now = (self.window + 1) * W + self.settings.policy_close_delay_s
        target = self.window + 1
        wait_for(lambda: learned.current.window == target)
        self.window = target

    def canary(self) -> dict[str, Any]:
        assert self.http is not None
        answer = self.http.get("/api/v1/admin/canary", headers=AUTH)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def wait_analyses(self, n: int) -> dict[str, Any]:
        """Wait until the canary has run ``n`` analyses (or ended); its status."""
        wait_for(
            lambda: (
                (c := self.canary()["canary"]) is not None
                and (c["analyses"] >= n or not c["active"])
            )
        )
        canary: dict[str, Any] = self.canary()["canary"]
        return canary


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path)
    yield svc
    svc.stop()


def phases(canary: dict[str, Any]) -> list[tuple[str, float]]:
    return [(e["phase"], e["weight"]) for e in canary["history"]]


def test_a_bad_challenger_rolls_back_by_itself_and_a_good_one_is_promoted_under_load(
    service: Service,
) -> None:
    champion = service.register("champion", factor=1e6, seed=1)
    service.registry.promote(champion, reason="first")
    # Calibrated to nothing: every bucket at the floor (1 token, no refill).
    bad = service.register("bad", factor=1e-9, seed=2)
    good = service.register("good", factor=1e6, seed=3)
    http = service.start()

    with Load(service.url) as load:
        service.load = load
        service.window_passes()  # K: history; the champion predicts K + 1
        assert http.get("/api/v1/params/client-0").json()["model_version"] == champion

        # -- the bad challenger: named by the alias, started by the service itself ----------
        service.registry.promote(bad, alias="challenger", reason="pipeline")
        wait_for(lambda: service.canary()["canary"] is not None)
        assert service.canary()["canary"]["phase"] == "shadow"
        service.window_passes()  # K + 1: the challenger's shadow predictions underflow
        first = service.wait_analyses(1)
        assert first["phase"] == "shadow"
        assert first["failed_checks"] == 1
        failed = {c["name"]: c for c in first["checks"] if not c["passed"]}
        assert set(failed) == {"underflow_rate", "prediction_error"}
        assert failed["underflow_rate"]["value"] == 1.0  # every client, in shadow only
        service.window_passes()
        bad_run = service.wait_analyses(2)
        assert bad_run["phase"] == "rolled_back"
        assert phases(bad_run) == [("shadow", 0.0), ("shadow", 0.0), ("rolled_back", 0.0)]
        assert service.registry.aliases() == {"champion": champion, "challenger": None}
        assert http.get("/api/v1/params/client-0").json()["model_version"] == champion
        # It is not started again: the alias was cleared.
        service.window_passes()
        assert service.canary()["canary"]["version"] == bad

        # -- the good challenger: shadow, 25 %, 50 %, promoted ----------------------------
        service.registry.promote(good, alias="challenger", reason="pipeline")
        wait_for(lambda: service.canary()["canary"]["version"] == good)
        for n in (1, 2):
            service.window_passes()
            service.wait_analyses(n)
        served = Counter(http.get(f"/api/v1/params/{c}").json()["model_version"] for c in CLIENTS)
        assert service.canary()["canary"]["weight"] == 50.0
        # The slice is stable-hashed: some clients on each model, and a decision for a
        # client of the slice names the challenger.
        assert set(served) == {champion, good}
        service.window_passes()
        good_run = service.wait_analyses(3)
        wait_for(
            lambda: (
                service.built.learned is not None and service.built.learned.models.version == good
            )
        )
        load_codes = dict(load.codes)

    # The timeline, for the record (pytest -s shows it): window time since the first window.
    for run in (bad_run, good_run):
        for e in run["history"]:
            at = e["at"] - T0
            print(f"t={at:7.1f}s {run['version']} {e['phase']:11} {e['weight']:4g}% {e['note']}")
    print("requests by answer:", load_codes, "by deciding version:", dict(load.versions))
    assert good_run["phase"] == "promoted", good_run
    assert phases(good_run) == [
        ("shadow", 0.0),
        ("canary", 25.0),
        ("canary", 50.0),
        ("promoted", 50.0),
    ]
    assert good_run["failed_checks"] == 0
    assert service.registry.aliases() == {"champion": good, "challenger": None}
    audit = [(e.action, e.alias, e.to_version) for e in service.registry.audit_log()]
    assert ("clear", "challenger", None) in audit
    assert audit[-2:] == [("promote", "champion", good), ("promote", "challenger", None)]

    # Not one request failed, during either canary, under a steady load.
    assert load_codes.keys() == {200}, load_codes
    assert load_codes[200] > 200
    # Decisions carry the version that decided: the challenger's slice while it served.
    assert load.versions[good] > 0
    assert load.versions[bad] == 0  # the bad model never decided for anyone
    text = http.get("/metrics").text
    assert metric(text, "openclaw_canary_phase", {"phase": "promoted"}) == 1.0
    assert (
        metric(text, "openclaw_canary_checks_total", {"check": "underflow_rate", "result": "fail"})
        == 2.0
    )
    assert (metric(text, "openclaw_canary_model_underflows_total", {"model_version": bad}) or 0) > 0
    assert metric(text, "openclaw_decisions_total", {"result": "allowed", "model_version": good})


def test_admin_api_and_cli_start_status_abort(service: Service) -> None:
    champion = service.register("champion", factor=1e6, seed=1)
    service.registry.promote(champion, reason="first")
    other = service.register("other", factor=1e6, seed=4)
    http = service.start()
    url = ["--url", service.url]

    assert http.get("/api/v1/admin/canary").status_code == 401
    wrong = http.post("/api/v1/admin/canary", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert http.get("/api/v1/admin/canary", headers=AUTH).json()["canary"] is None

    # No challenger alias and no version: refused with the reason.
    refused = http.post("/api/v1/admin/canary", headers=AUTH, json={})
    assert refused.status_code == 409
    assert "no challenger alias" in refused.json()["reason"]
    bad_field = http.post("/api/v1/admin/canary", headers=AUTH, json={"version": 3})
    assert bad_field.status_code == 422
    missing = Ran("canary", "start", "model-20990101", *url, "--token", TOKEN)
    assert missing.exit_code == 2
    assert "cannot load model-20990101" in missing.output

    started = Ran("canary", "start", other, "--reason", "by hand", *url, "--token", TOKEN)
    assert started.exit_code == 0, started.output
    assert f"canary {other}: shadow" in started.output
    # Asking again for the running canary changes nothing; another version is refused.
    twice = http.post("/api/v1/admin/canary", headers=AUTH, json={"version": other})
    assert twice.status_code == 202
    assert len(twice.json()["canary"]["history"]) == 1
    third = service.register("third", factor=1e6, seed=5)
    refused = http.post("/api/v1/admin/canary", headers=AUTH, json={"version": third})
    assert refused.status_code == 409
    assert f"a canary of {other} is running" in refused.json()["reason"]

    status = Ran("canary", "status", *url, "--token", TOKEN)
    assert status.exit_code == 0
    assert f"champion: {champion}" in status.output
    assert "by hand" in status.output
    denied = Ran("canary", "status", *url, "--token", "wrong")
    assert denied.exit_code == 2
    assert "HTTP 401" in denied.output
    assert "wrong" not in denied.output.replace("--token", "")  # the token is never echoed

    aborted = Ran("canary", "abort", "--reason", "enough", *url, "--token", TOKEN)
    assert aborted.exit_code == 0, aborted.output
    assert "aborted" in aborted.output
    assert service.canary()["canary"]["phase"] == "aborted"
    assert service.registry.alias("champion") == champion
    again = Ran("canary", "abort", *url, "--token", TOKEN)
    assert again.exit_code == 2
    assert "no canary is running" in again.output


def test_a_static_service_has_no_canary(tmp_path: Path) -> None:
    settings = Settings(admin_token=SecretStr(TOKEN), policy_path=None)
    built = build(settings)
    with BackgroundServer(built.app, settings) as server:
        answer = httpx.get(f"{server.url}/api/v1/admin/canary", headers=AUTH)
    assert answer.status_code == 409
    assert answer.json()["error"] == "no_canary"


def test_the_pipelines_latest_drift_is_a_metric_of_the_service(tmp_path: Path) -> None:
    settings = Settings(policy_path=None, pipeline_dir=tmp_path / "pipeline")
    built = build(settings)
    with BackgroundServer(built.app, settings) as server:
        before = httpx.get(f"{server.url}/metrics").text
        assert "openclaw_feature_drift_psi" not in before  # no run has computed drift
        settings.pipeline_dir.mkdir()
        (settings.pipeline_dir / "drift.json").write_text(
            '{"psi": {"n_requests": 0.31, "latency_p99_ms": 0.02}}'
        )
        text = httpx.get(f"{server.url}/metrics").text
        assert metric(text, "openclaw_feature_drift_psi", {"feature": "n_requests"}) == 0.31
        (settings.pipeline_dir / "drift.json").write_text('{"psi": {"n_requests": "high"}}')
        broken = httpx.get(f"{server.url}/metrics")
    # An unreadable file exports nothing and breaks nothing else.
    assert broken.status_code == 200
    assert "openclaw_feature_drift_psi" not in broken.text
    assert "openclaw_decision_latency_seconds" in broken.text


def test_replicas_follow_the_registry_when_another_one_ends_the_canary(service: Service) -> None:
    champion = service.register("champion", factor=1e6, seed=1)
    service.registry.promote(champion, reason="first")
    challenger = service.register("challenger", factor=1e6, seed=6)
    http = service.start()
    # Started through one replica's API: the alias names it, so every replica canaries it.
    started = http.post("/api/v1/admin/canary", headers=AUTH, json={"version": challenger})
    assert started.status_code == 202
    assert service.registry.alias("challenger") == challenger

    # Another replica rolled it back (the alias cleared): this one aborts too.
    service.registry.clear("challenger", reason="rolled back on replica 2")
    wait_for(lambda: service.canary()["canary"]["phase"] == "aborted")
    assert "no longer names it" in service.canary()["canary"]["history"][-1]["note"]
    assert service.registry.alias("champion") == champion

    # Another replica promoted it: this one ends promoted and serves it at once.
    again = http.post("/api/v1/admin/canary", headers=AUTH, json={"version": challenger})
    assert again.status_code == 202
    service.registry.promote(challenger, reason="promoted on replica 2")
    wait_for(lambda: service.canary()["canary"]["phase"] == "promoted")
    learned = service.built.learned
    assert learned is not None
    wait_for(lambda: learned.models.version == challenger)
