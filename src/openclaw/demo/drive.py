"""The service on the demo's clock, and the requests sent to it over HTTP."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from openclaw.demo.plan import I64, US, Bool, Plan

if TYPE_CHECKING:
    import httpx

    from openclaw.clock import FakeClock
    from openclaw.service.server import Built

#: Telemetry events per POST (well inside ``telemetry_max_body_bytes``).
POST_EVENTS: Final = 5000
#: Simulated response time of the protected API, ms (access logs have none): lognormal with
#: the simulator backend's median and sigma; a throttled request never reaches it.
LATENCY_MEDIAN_MS: Final = 50.0
LATENCY_SIGMA: Final = 0.25
THROTTLED_MS: Final = 1.0
#: How long the driver waits for the service to publish a window's table (real seconds).
PUBLISH_TIMEOUT_S: Final = 30.0
MODEL: Final = "model"
TIER: Final = "tier_default"
OVERRIDE: Final = "static_override"
#: The model's default bucket (its manifest's policy_defaults), for clients it has no
#: prediction for yet.
MODEL_DEFAULT: Final = "model_default"
#: Where a request's limits came from (``GET /api/v1/params`` ``source``), by code.
SOURCES: Final = (TIER, MODEL, OVERRIDE, MODEL_DEFAULT)


# -- what the driver measured ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """One client's limits under one table, as ``GET /api/v1/params`` gave them."""

    source: str
    capacity: float
    refill_rate: float
    model_version: str | None


@dataclass(frozen=True, slots=True)
class Measured:
    """Per request sent: client, trace time, class, the HTTP status received and the source
    of the limits it was decided on; per (client, table window) the limits; the service's
    own counters at the end."""

    client: I64
    ts_us: I64
    scraper: Bool
    status: npt.NDArray[np.int16]
    source: npt.NDArray[np.int8]
    limits: dict[tuple[int, int], Limits]
    wall_s: float
    planned: int  #: requests planned; fewer were sent when the time bound stopped the replay
    windows: int  #: window boundaries the service published during the replay
    #: ``openclaw_decisions_total`` of the service, summed by result (allowed, denied).
    decisions: dict[str, float]
    #: ``/readyz``'s model status at the end (serving version, governor multipliers).
    model_status: dict[str, Any]

    @property
    def sent(self) -> int:
        return int(self.ts_us.size)

    @property
    def stopped_early(self) -> bool:
        return self.sent < self.planned


# -- the service and the driver ----------------------------------------------------------------


class Telemetry:
    """The events the protected API would report, posted as NDJSON in batches."""

    def __init__(self, http: httpx.Client, built: Built, *, seed: int) -> None:
        self.http = http
        self.built = built
        self.rng = np.random.default_rng([seed, 7])
        self.lines: list[bytes] = []

    def add(self, client: str, ts_us: int, status: int) -> None:
        import orjson

        if status == 429:
            ms = THROTTLED_MS
        else:
            ms = float(self.rng.lognormal(math.log(LATENCY_MEDIAN_MS), LATENCY_SIGMA))
        self.lines.append(
            orjson.dumps(
                {
                    "client_id": client,
                    "timestamp": ts_us / US,
                    "response_time_ms": round(ms, 3),
                    "status_code": status,
                }
            )
        )
        if len(self.lines) >= POST_EVENTS:
            self.post()

    def post(self) -> None:
        if not self.lines:
            return
        answer = self.http.post(
            "/api/v1/telemetry",
            content=b"\n".join(self.lines),
            headers={"Content-Type": "application/x-ndjson"},
        )
        if answer.status_code != 202 or answer.json()["rejected"]:
            raise RuntimeError(f"the service refused telemetry: {answer.status_code} {answer.text}")
        self.lines.clear()

    def deliver(self) -> None:
        """Post what is pending and push the queue through to the online features now (its
        timer would, within ``telemetry_flush_interval_s`` of real time)."""
        self.post()
        self.built.telemetry.flush()


def publish(built: Built, clock: FakeClock, telemetry: Telemetry, window: int) -> None:
    """Close window ``window - 1`` as the service would: its telemetry in, the clock past the
    close delay, then wait for the background task to publish the table of ``window``."""
    learned = built.learned
    assert learned is not None
    telemetry.deliver()
    clock.now = max(clock.now, window * learned.window_s + learned.close_delay_s)
    deadline = time.monotonic() + PUBLISH_TIMEOUT_S
    while (learned.current.window or -1) < window:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not publish the table of window {window}")
        time.sleep(0.002)


def _limits_of(http: httpx.Client, client: str) -> Limits:
    answer = http.get(f"/api/v1/params/{quote(client, safe='')}")
    answer.raise_for_status()
    body = answer.json()
    first = body["limits"][0]
    return Limits(body["source"], first["capacity"], first["refill_rate"], body["model_version"])


def service_decisions(http: httpx.Client) -> dict[str, float]:
    """``openclaw_decisions_total`` from ``/metrics``, summed by result."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {"allowed": 0.0, "denied": 0.0}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "openclaw_decisions_total":
                result = sample.labels["result"]
                out[result] = out.get(result, 0.0) + sample.value
    return out


#: ``progress(sent, admitted, throttled)``.
ProgressFn = Callable[[int, int, int], None]


def warm_up(plan: Plan, *, base_url: str, built: Built, seed: int) -> int:
    """Post the trace before the replay as telemetry (admitted, with the trace's status)."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=60.0) as http:
        telemetry = Telemetry(http, built, seed=seed)
        names = plan.names
        for c, t, s in zip(
            plan.warm_client.tolist(),
            plan.warm_ts_us.tolist(),
            plan.warm_status.tolist(),
            strict=True,
        ):
            telemetry.add(names[c], t, s)
        telemetry.deliver()
    return int(plan.warm_ts_us.size)


def drive(
    plan: Plan,
    *,
    base_url: str,
    built: Built,
    clock: FakeClock,
    seed: int,
    max_seconds: float,
    progress: ProgressFn | None = None,
) -> Measured:
    """Send the plan's requests over HTTP, each at its trace time on ``clock`` (the module
    docstring says how)."""
    import httpx

    learned = built.learned
    assert learned is not None
    window_s = learned.window_s
    delay_s = learned.close_delay_s
    names = plan.names
    n = len(plan)
    status = np.zeros(n, np.int16)
    source = np.full(n, -1, np.int8)
    limits: dict[tuple[int, int], Limits] = {}
    first_window = plan.start_us // plan.window_us
    published = first_window - 1  # the window the table in force applies to (at most)
    sent = admitted = throttled = 0
    started = time.perf_counter()
    deadline = started + max_seconds
    with (
        httpx.Client(base_url=base_url, timeout=30.0) as legit_http,
        httpx.Client(base_url=base_url, timeout=30.0) as scraper_http,
    ):
        telemetry = Telemetry(legit_http, built, seed=seed)
        for c, t_us, is_scraper, trace_status in zip(
            plan.client.tolist(),
            plan.ts_us.tolist(),
            plan.scraper.tolist(),
            plan.status.tolist(),
            strict=True,
        ):
            t = t_us / US
            # Each boundary the clock passes, at its close delay, as the service sees it.
            while t >= (published + 1) * window_s + delay_s:
                publish(built, clock, telemetry, published + 1)
                published += 1
            if time.perf_counter() > deadline:
                break
            clock.now = max(clock.now, t)
            http = scraper_http if is_scraper else legit_http
            key = (c, published)
            known = limits.get(key)
            if known is None:
                known = limits[key] = _limits_of(http, names[c])
            source[sent] = SOURCES.index(known.source)
            code = http.get("/api/v1/rate", params={"client_id": names[c]}).status_code
            status[sent] = code
            admitted += code == 200
            throttled += code == 429
            telemetry.add(names[c], t_us, trace_status if code == 200 else code)
            sent += 1
            if progress is not None and sent % 50 == 0:
                progress(sent, admitted, throttled)
        telemetry.deliver()
        wall = time.perf_counter() - started
        decisions = service_decisions(legit_http)
        model_status = legit_http.get("/readyz").json().get("model", {})
    if progress is not None:
        progress(sent, admitted, throttled)
    return Measured(
        client=plan.client[:sent],
        ts_us=plan.ts_us[:sent],
        scraper=plan.scraper[:sent],
        status=status[:sent],
        source=source[:sent],
        limits=limits,
        wall_s=wall,
        planned=n,
        windows=published - first_window + 1,
        decisions=decisions,
        model_status=model_status,
    )
