"""Synthetic telemetry: realistic multi-day traffic with labelled abuse, calibrated on a real trace.

The generative model (docs/synthetic-traffic.md explains it with the fitted numbers):

Legitimate clients
    Client ``c`` starts sessions as a Poisson process of ``lambda_c`` sessions per (weekday)
    day, modulated by an hour-of-day profile (and a weekend factor). ``lambda_c`` is lognormal
    across the population: most visitors come once, a few (proxies, regulars) all the time,
    which is where the heavy tail of client sizes comes from. The ``N`` clients asked for are
    the ones seen at least once in the span, so ``lambda`` is drawn from its distribution
    given at least one session, and the session count from the zero-truncated Poisson.
    A session is a run of bursts (page views: a page and its embedded objects within seconds)
    separated by think times; bursts per session are a discretised lognormal, the burst size
    is the trace's own distribution, gaps inside a burst a truncated exponential, and think
    times ``burst_gap_s`` plus a lognormal.
Abusive clients (labelled)
    scraper: a new client at a constant high rate for hours; runaway: an existing client at
    20 to 100 times its own rate for a while; distributed: many new clients, each at a modest
    rate, together a large share of the capacity.
Backend
    One server of ``capacity_rps``. Per second, a backlog ``Q`` (at most ``max_queue_s`` of
    work; arrivals beyond it are shed with 503) adds queueing delay; on top, the base response
    time of the route grows as ``1 / (1 - rho)`` with ``rho`` the load of the last
    ``load_window_s`` seconds. Errors (500) rise with ``rho``; a response slower than
    ``timeout_ms`` is a 504.

Everything is vectorised NumPy over per-client / per-session / per-burst arrays (no loop per
event), seeded, and pure: the same spec and seed give the same events, ids included. Event ids
are ``<prefix><index>`` with the prefix a digest of the seed and the generated times and
clients, so regenerating the same data into a store is idempotent, and two different runs
never share an id.

Calibration (:func:`traffic_stats`) measures per-client rate and burst distributions of any
event set the same way, so the real trace and the generated traffic are compared like for
like (:func:`calibration_report`).
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from openclaw.errors import ConfigError, IngestError
from openclaw.features.core import offsets_from_lengths, segmented_envelope, segmented_sliding_peak
from openclaw.telemetry.events import EventBatch, object_array

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
IntP = npt.NDArray[np.intp]
Bool = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]

US: Final = 1_000_000
HOUR_S: Final = 3600.0
DAY_S: Final = 86_400.0
#: 1970-01-01 was a Thursday: weekday of epoch day ``d`` is ``(d + 3) % 7`` (Monday 0).
_EPOCH_WEEKDAY: Final = 3

AbuseKind = Literal["scraper", "runaway", "distributed"]
ABUSE_KINDS: Final[tuple[AbuseKind, ...]] = ("scraper", "runaway", "distributed")
LABEL_COLUMNS: Final = ("client_id", "kind", "start", "end")
_Progress = Callable[[int], None]
_Start = Callable[[int], None]


# -- routes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One path of the simulated site. ``weight``: popularity among routes of its role."""

    path: str
    method: str
    role: Literal["page", "asset"]
    weight: float
    base_ms: float  #: median response time at no load
    median_bytes: float


#: A small heavy-tailed set: a burst opens with a page (or an API call) and continues with
#: embedded assets. Popularity is roughly Zipf within each role.
ROUTES: Final[tuple[Route, ...]] = (
    Route("/", "GET", "page", 30.0, 35.0, 8_000),
    Route("/products/{id}", "GET", "page", 20.0, 45.0, 12_000),
    Route("/products", "GET", "page", 15.0, 60.0, 15_000),
    Route("/search", "GET", "page", 8.0, 180.0, 10_000),
    Route("/blog/{slug}", "GET", "page", 6.0, 40.0, 20_000),
    Route("/api/v1/items/{id}", "GET", "page", 6.0, 25.0, 1_500),
    Route("/api/v1/search", "GET", "page", 4.0, 150.0, 4_000),
    Route("/cart", "GET", "page", 3.0, 70.0, 9_000),
    Route("/api/v1/cart", "POST", "page", 2.0, 90.0, 600),
    Route("/account", "GET", "page", 2.0, 80.0, 7_000),
    Route("/login", "GET", "page", 1.5, 30.0, 5_000),
    Route("/api/v1/session", "POST", "page", 1.0, 120.0, 400),
    Route("/help", "GET", "page", 1.0, 30.0, 6_000),
    Route("/robots.txt", "GET", "page", 0.3, 2.0, 200),
    Route("/static/app.js", "GET", "asset", 10.0, 4.0, 120_000),
    Route("/static/app.css", "GET", "asset", 8.0, 3.0, 30_000),
    Route("/static/img/logo.png", "GET", "asset", 8.0, 3.0, 6_000),
    Route("/static/img/{name}.jpg", "GET", "asset", 6.0, 6.0, 80_000),
    Route("/static/img/sprite.png", "GET", "asset", 5.0, 4.0, 40_000),
    Route("/static/fonts/main.woff2", "GET", "asset", 3.0, 4.0, 50_000),
    Route("/favicon.ico", "GET", "asset", 3.0, 2.0, 1_500),
)
_ROUTE_INDEX: Final = {r.path: i for i, r in enumerate(ROUTES)}
METHODS: Final = ("GET", "POST", "HEAD")


# -- the fitted traffic model ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrafficModel:
    """Parameters of legitimate traffic, as :func:`fit_trace` estimates them from a trace."""

    #: Relative request intensity per UTC hour of day (mean 1).
    hour_profile: tuple[float, ...]
    #: ``log(lambda)``, lambda = sessions per weekday, is Normal(mu, sigma) over the population.
    sessions_log_mu: float
    sessions_log_sigma: float
    #: Bursts per session: 1 with probability ``bounce_share`` (a visitor who reads one page
    #: and leaves), else ``max(1, ceil(exp(Normal(mu, sigma))))``.
    bounce_share: float
    bursts_log_mu: float
    bursts_log_sigma: float
    #: P(size = 1, 2, ...) of a session's first burst (a page and its not yet cached
    #: objects) and of its later bursts (mostly cached); the last entry holds the tail.
    first_burst_pmf: tuple[float, ...]
    burst_size_pmf: tuple[float, ...]
    #: Gap between requests of a burst: Gamma(shape, scale), truncated at burst_gap_s. A shape
    #: below 1 puts mass near 0: browsers fetch embedded objects in parallel.
    within_gap_shape: float
    within_gap_scale_s: float
    #: Think time between bursts is ``burst_gap_s + exp(Normal(mu, sigma))`` (< session_gap_s).
    think_log_mu: float
    think_log_sigma: float
    #: A gap above this separates bursts; above session_gap_s, sessions.
    burst_gap_s: float = 5.0
    session_gap_s: float = 1800.0
    #: (status, share) of legitimate responses before the backend's own errors.
    status_mix: tuple[tuple[int, float], ...] = ((200, 1.0),)

    def __post_init__(self) -> None:
        if len(self.hour_profile) != 24 or min(self.hour_profile) <= 0:
            raise ConfigError("hour_profile needs 24 positive weights")
        for pmf in (self.first_burst_pmf, self.burst_size_pmf):
            if not pmf or min(pmf) < 0 or sum(pmf) <= 0:
                raise ConfigError("burst size pmfs need non-negative probabilities")
        if not (self.within_gap_shape > 0 and self.within_gap_scale_s > 0):
            raise ConfigError("within-burst gap shape and scale must be positive")
        if not 0 < self.burst_gap_s < self.session_gap_s:
            raise ConfigError("need 0 < burst_gap_s < session_gap_s")


#: Fitted by ``fit_trace(*read_nasa_tsv("nasa_19950801.tsv"))`` (tests/test_synthetic.py checks
#: these constants against a fresh fit). Hours 19..03 UTC are not in the trace (it ends at
#: 18:52 UTC): they are interpolated, log-linearly, between 18 and 04 UTC.
# fmt: off
NASA_MODEL: Final = TrafficModel(
    hour_profile=(
        0.8873, 0.8499, 0.8140, 0.7797, 0.7469, 0.6298, 0.4515, 0.5543,
        0.4479, 0.5211, 0.4647, 0.8085, 1.2996, 1.4547, 1.7225, 1.8407,
        2.0204, 1.5001, 1.1488, 1.1004, 1.0540, 1.0096, 0.9671, 0.9263,
    ),
    sessions_log_mu=-3.8,
    sessions_log_sigma=1.7,
    bounce_share=0.16,
    bursts_log_mu=0.98,
    bursts_log_sigma=1.16,
    first_burst_pmf=(
        0.4178, 0.1078, 0.0377, 0.0980, 0.0496, 0.2533, 0.0037, 0.0021, 0.0184,
        0.0031, 0.0012, 0.0052, 0.0006, 0.0, 0.0, 0.0015,
    ),
    burst_size_pmf=(
        0.6280, 0.1776, 0.0743, 0.0585, 0.0218, 0.0307, 0.0031, 0.0008, 0.0020,
        0.0008, 0.0009, 0.0007, 0.0002, 0.0001, 0.0003, 0.0002,
    ),
    within_gap_shape=0.6,
    within_gap_scale_s=3.771,
    think_log_mu=3.07,
    think_log_sigma=1.70,
    status_mix=((200, 0.9044), (302, 0.0117), (304, 0.0767), (404, 0.0071)),
)
# fmt: on


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """What to generate. Ranges ``(low, high)`` are drawn log-uniformly per incident."""

    days: float = 7.0
    #: Legitimate clients seen in the span (each sends at least one request).
    clients: int = 10_000
    #: Start of the span, epoch microseconds (UTC); default 2024-01-01T00:00Z, a Monday.
    start_us: int = 1_704_067_200_000_000
    #: Abuse incidents, their kinds taken in turn: scraper, runaway, distributed, scraper, ...
    abusive: int = 3
    model: TrafficModel = NASA_MODEL
    #: Saturday and Sunday traffic relative to a weekday (an assumption: the trace is one day).
    weekend_factor: float = 0.75
    # -- the backend
    #: Requests per second the backend serves; None: ``headroom`` times the busiest hour's
    #: mean legitimate rate, at least ``min_capacity_rps``.
    capacity_rps: float | None = None
    headroom: float = 1.6
    min_capacity_rps: float = 1.0
    load_window_s: int = 10
    max_queue_s: float = 8.0
    timeout_ms: float = 10_000.0
    rt_sigma: float = 0.6
    base_5xx: float = 0.001
    # -- abuse
    scraper_share: tuple[float, float] = (0.25, 1.0)  #: rate as a share of capacity
    scraper_min_rps: float = 1.0
    scraper_hours: tuple[float, float] = (1.0, 8.0)
    runaway_factor: tuple[float, float] = (20.0, 100.0)
    runaway_minutes: tuple[float, float] = (10.0, 120.0)
    runaway_min_events: int = 20
    distributed_clients: tuple[float, float] = (50.0, 400.0)
    distributed_share: tuple[float, float] = (0.25, 1.0)  #: all of them, share of capacity
    distributed_hours: tuple[float, float] = (0.5, 4.0)
    #: Events per EventBatch when iterating the result.
    chunk_size: int = 100_000

    def __post_init__(self) -> None:
        if not self.days > 0 or not math.isfinite(self.days):
            raise ConfigError(f"days must be positive, got {self.days!r}")
        if self.clients < 1:
            raise ConfigError(f"clients must be at least 1, got {self.clients!r}")
        if self.abusive < 0:
            raise ConfigError(f"abusive must be >= 0, got {self.abusive!r}")
        if self.capacity_rps is not None and not self.capacity_rps > 0:
            raise ConfigError("capacity_rps must be positive")
        if self.chunk_size < 1 or self.load_window_s < 1:
            raise ConfigError("chunk_size and load_window_s must be at least 1")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and len(value) == 2 and not 0 < value[0] <= value[1]:
                raise ConfigError(f"{f.name} must be a range 0 < low <= high, got {value!r}")

    @property
    def span_s(self) -> float:
        return self.days * DAY_S


@dataclass(frozen=True, slots=True)
class AbuseLabel:
    """An abusive client and when it abused (``[start_us, end_us)``); the event schema has no
    label, so these travel in a separate CSV."""

    client_id: str
    kind: AbuseKind
    start_us: int
    end_us: int


# -- the result --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SyntheticTraffic:
    """Generated events in compact columns, time-ordered; iterating yields EventBatch chunks.

    ``client`` codes index ``client_names``; ``route``/``method`` codes index ``ROUTES`` and
    ``METHODS``. Event ``i`` has id ``id_prefix + str(i)``.
    """

    client_names: ObjArray
    client: npt.NDArray[np.int32]
    ts_us: I64
    status_code: npt.NDArray[np.int16]
    response_time_ms: F64
    route: npt.NDArray[np.uint8]
    method: npt.NDArray[np.uint8]
    bytes: I64
    id_prefix: str
    capacity_rps: float
    chunk_size: int
    #: How many of ``client_names`` are legitimate (the first ones); the rest are new abusers.
    legit_clients: int

    def __len__(self) -> int:
        return int(self.ts_us.size)

    def __iter__(self) -> Iterator[EventBatch]:
        return self.batches(self.chunk_size)

    def batches(self, size: int) -> Iterator[EventBatch]:
        for start in range(0, len(self), size):
            yield self.batch(start, min(start + size, len(self)))

    def batch(self, start: int, stop: int) -> EventBatch:
        """Events ``[start, stop)`` as the columnar batch every store inserts."""
        ids = np.empty(stop - start, dtype=object)
        ids[:] = [f"{self.id_prefix}{i}" for i in range(start, stop)]
        return EventBatch(
            event_id=ids,
            client_id=self.client_names[self.client[start:stop]],
            ts_us=self.ts_us[start:stop],
            status_code=self.status_code[start:stop],
            response_time_ms=self.response_time_ms[start:stop],
            route=_ROUTE_PATHS[self.route[start:stop]],
            method=_METHOD_NAMES[self.method[start:stop]],
            bytes=self.bytes[start:stop],
        )

    def to_batch(self) -> EventBatch:
        return self.batch(0, len(self))


_ROUTE_PATHS: Final = object_array([r.path for r in ROUTES])
_METHOD_NAMES: Final = object_array(METHODS)


# -- sampling helpers --------------------------------------------------------------------------


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> F64:
    lo, hi = bounds
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def _offsets_within(gaps: F64, first: Bool) -> F64:
    """Cumulative gaps restarting at every group's first element (whose own gap is ignored)."""
    g = np.where(first, 0.0, gaps)
    total = np.cumsum(g)
    head = np.maximum.accumulate(np.where(first, np.arange(g.size), 0))
    out: F64 = total - total[head]
    return out


def _firsts(lengths: IntP) -> Bool:
    """Mask of each group's first element, groups laid out consecutively with these lengths."""
    total = int(lengths.sum())
    first = np.zeros(total, dtype=np.bool_)
    starts = offsets_from_lengths(lengths)[:-1]
    first[starts[lengths > 0]] = True
    return first


def _client_names(seed: int, start: int, count: int) -> list[str]:
    """Opaque, unique ids: a bijective 64-bit mix of (seed, index), so abusers' ids look like
    everyone else's and nothing in an id tells a model what the client is."""
    x = (np.arange(start, start + count, dtype=np.uint64) + np.uint64(seed % 2**32 << 32)).astype(
        np.uint64
    )
    # splitmix64's finaliser: a bijection of uint64, so distinct inputs give distinct ids.
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return [f"c{v:016x}" for v in x.tolist()]


def _hour_weights(spec: SyntheticSpec) -> tuple[F64, F64]:
    """Per hour bin of the span: its start (seconds from the span start) and its weight in
    weekday-day units (a full weekday sums to 1)."""
    n = math.ceil(spec.span_s / HOUR_S)
    starts = np.arange(n, dtype=np.float64) * HOUR_S
    lengths = np.minimum(spec.span_s - starts, HOUR_S)
    absolute_h = spec.start_us // (US * 3600) + np.arange(n, dtype=np.int64)
    profile = np.asarray(spec.model.hour_profile, dtype=np.float64)
    profile = profile / profile.sum()
    weekday = (absolute_h // 24 + _EPOCH_WEEKDAY) % 7
    day_factor = np.where(weekday >= 5, spec.weekend_factor, 1.0)
    return starts, profile[absolute_h % 24] * day_factor * lengths / HOUR_S


def _times_from_positions(positions: F64, starts: F64, weights: F64, span_s: float) -> F64:
    """Inverse CDF of the piecewise-constant intensity: positions in [0, 1] to seconds."""
    cdf = np.concatenate(([0.0], np.cumsum(weights)))
    cdf /= cdf[-1]
    b = np.clip(np.searchsorted(cdf, positions, side="right") - 1, 0, weights.size - 1)
    width = np.maximum(cdf[b + 1] - cdf[b], 1e-300)
    length = np.minimum(span_s - starts[b], HOUR_S)
    frac = np.clip((positions - cdf[b]) / width, 0.0, 1.0)
    out: F64 = np.minimum(starts[b] + frac * length, np.nextafter(span_s, 0.0))
    return out


def _posterior_rates(rng: np.random.Generator, model: TrafficModel, exposure: float, n: int) -> F64:
    """``n`` session rates from the population's lognormal, given at least one session in
    ``exposure`` days: rejection sampling with acceptance ``1 - exp(-lambda * exposure)``."""
    out: list[F64] = []
    have = 0
    while have < n:
        draw = max(4 * (n - have), 1024)
        lam = np.exp(rng.normal(model.sessions_log_mu, model.sessions_log_sigma, draw))
        keep = lam[rng.random(draw) < -np.expm1(-lam * exposure)]
        out.append(keep)
        have += keep.size
    return np.concatenate(out)[:n]


def _truncated_gamma(
    rng: np.random.Generator, shape: float, scale: float, upper: float, n: int
) -> F64:
    x = rng.gamma(shape, scale, n)
    bad = np.flatnonzero(x >= upper)
    while bad.size:  # redraw: a longer gap would end the burst
        x[bad] = rng.gamma(shape, scale, bad.size)
        bad = bad[x[bad] >= upper]
    return x


def _think_times(rng: np.random.Generator, model: TrafficModel, n: int) -> F64:
    limit = model.session_gap_s - model.burst_gap_s
    extra = np.exp(rng.normal(model.think_log_mu, model.think_log_sigma, n))
    bad = np.flatnonzero(extra >= limit)
    while bad.size:  # redraw the few beyond a session gap: they would split the session
        extra[bad] = np.exp(rng.normal(model.think_log_mu, model.think_log_sigma, bad.size))
        bad = bad[extra[bad] >= limit]
    return model.burst_gap_s + extra


def _choice(rng: np.random.Generator, weights: Sequence[float], n: int) -> IntP:
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n), side="right"), cdf.size - 1)


@dataclass(slots=True)
class _Parts:
    """Events under construction (unsorted), appended per source."""

    t: list[F64] = field(default_factory=list)  # seconds from the span start
    client: list[npt.NDArray[np.int32]] = field(default_factory=list)
    route: list[npt.NDArray[np.uint8]] = field(default_factory=list)
    status: list[npt.NDArray[np.int16]] = field(default_factory=list)

    def add(
        self, t: F64, client: npt.ArrayLike, route: npt.ArrayLike, status: npt.ArrayLike
    ) -> None:
        n = t.size
        self.t.append(t)
        self.client.append(np.broadcast_to(np.asarray(client, dtype=np.int32), (n,)).copy())
        self.route.append(np.broadcast_to(np.asarray(route, dtype=np.uint8), (n,)).copy())
        self.status.append(np.broadcast_to(np.asarray(status, dtype=np.int16), (n,)).copy())


def _legit_events(rng: np.random.Generator, spec: SyntheticSpec, parts: _Parts) -> None:
    model = spec.model
    starts, weights = _hour_weights(spec)
    exposure = float(weights.sum())
    n = spec.clients
    lam = _posterior_rates(rng, model, exposure, n)
    m = lam * exposure
    # Zero-truncated Poisson, exactly: the first session's position T1 conditioned on < 1,
    # then a Poisson number of further sessions uniformly in (T1, 1].
    t1 = -np.log1p(-rng.random(n) * -np.expm1(-m)) / m
    extra = rng.poisson(m * (1.0 - t1))
    sessions = 1 + extra
    sess_client = np.repeat(np.arange(n, dtype=np.int32), sessions)
    first_session = _firsts(sessions.astype(np.intp))
    pos = np.where(
        first_session,
        t1[sess_client],
        t1[sess_client] + (1.0 - t1[sess_client]) * rng.random(sess_client.size),
    )
    sess_t = _times_from_positions(pos, starts, weights, spec.span_s)

    n_sess = sess_client.size
    bursts = np.maximum(
        1, np.ceil(np.exp(rng.normal(model.bursts_log_mu, model.bursts_log_sigma, n_sess)))
    )
    bursts[rng.random(n_sess) < model.bounce_share] = 1
    bursts = np.minimum(bursts, 2000).astype(np.intp)
    burst_sess = np.repeat(np.arange(n_sess), bursts)
    first_burst = _firsts(bursts)
    size = (
        np.where(
            first_burst,
            _choice(rng, model.first_burst_pmf, burst_sess.size),
            _choice(rng, model.burst_size_pmf, burst_sess.size),
        ).astype(np.intp)
        + 1
    )
    req_burst = np.repeat(np.arange(burst_sess.size), size)
    first_req = _firsts(size)
    in_burst = _offsets_within(
        _truncated_gamma(
            rng, model.within_gap_shape, model.within_gap_scale_s, model.burst_gap_s, req_burst.size
        ),
        first_req,
    )
    # Think time runs from the previous burst's last request, as the fit measures it.
    duration = in_burst[np.cumsum(size) - 1]  # each burst's last request
    think = _think_times(rng, model, burst_sess.size)
    think[1:] += duration[:-1]
    burst_t = sess_t[burst_sess] + _offsets_within(think, first_burst)
    t = burst_t[req_burst] + in_burst
    client = sess_client[burst_sess[req_burst]]
    pages = [i for i, r in enumerate(ROUTES) if r.role == "page"]
    assets = [i for i, r in enumerate(ROUTES) if r.role == "asset"]
    page_pick = np.asarray(pages)[_choice(rng, [ROUTES[i].weight for i in pages], t.size)]
    asset_pick = np.asarray(assets)[_choice(rng, [ROUTES[i].weight for i in assets], t.size)]
    route = np.where(first_req, page_pick, asset_pick)
    codes, shares = zip(*model.status_mix, strict=True)
    status = np.asarray(codes, dtype=np.int16)[_choice(rng, shares, t.size)]
    inside = t < spec.span_s  # sessions that start near the end run past it
    parts.add(t[inside], client[inside], route[inside], status[inside])


def _window(rng: np.random.Generator, span_s: float, duration_s: float) -> tuple[float, float]:
    duration_s = min(duration_s, span_s)
    start = float(rng.uniform(0.0, span_s - duration_s))
    return start, start + duration_s


def _draw(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(_log_uniform(rng, bounds, 1)[0])


@dataclass(slots=True)
class _Abuse:
    """Appends abusive events to ``parts``; new abusers get client codes from len(names) on."""

    rng: np.random.Generator
    spec: SyntheticSpec
    parts: _Parts
    capacity: float
    names: list[str]
    seed: int
    labels: list[AbuseLabel] = field(default_factory=list)
    used: set[int] = field(default_factory=set)

    def new_client(self) -> int:
        code = len(self.names)
        self.names.extend(_client_names(self.seed, code, 1))
        return code

    def label(self, code: int, kind: AbuseKind, start: float, end: float) -> None:
        start_us = self.spec.start_us
        self.labels.append(
            AbuseLabel(
                self.names[code], kind, start_us + round(start * US), start_us + round(end * US)
            )
        )

    def scraper(self) -> None:
        rng, spec = self.rng, self.spec
        rate = max(spec.scraper_min_rps, _draw(rng, spec.scraper_share) * self.capacity)
        start, end = _window(rng, spec.span_s, _draw(rng, spec.scraper_hours) * HOUR_S)
        # Constant rate: a clock with a little jitter, not Poisson clumps.
        n = max(int((end - start) * rate), 1)
        t = start + (np.arange(n) + rng.uniform(0.0, 0.8, n)) / rate
        t = t[t < end]
        crawl = [
            _ROUTE_INDEX[p] for p in ("/products/{id}", "/products", "/search", "/blog/{slug}")
        ]
        route = np.asarray(crawl)[_choice(rng, [6, 2, 1, 1], t.size)]
        status = np.asarray([200, 404, 301], dtype=np.int16)[
            _choice(rng, [0.9, 0.08, 0.02], t.size)
        ]
        code = self.new_client()
        self.parts.add(t, code, route, status)
        self.label(code, "scraper", start, end)

    def runaway(self) -> None:
        rng, spec = self.rng, self.spec
        legit_t, legit_client = self.parts.t[0], self.parts.client[0]
        counts = np.bincount(legit_client, minlength=spec.clients)
        candidates = np.flatnonzero(counts >= spec.runaway_min_events)
        if candidates.size == 0:
            candidates = np.array([int(np.argmax(counts))])
        free = np.asarray([c for c in candidates.tolist() if c not in self.used])
        code = int(rng.choice(free if free.size else candidates))
        self.used.add(code)
        # Its own rate: requests per clock hour in which it was active.
        own_hours = np.unique((legit_t[legit_client == code] // HOUR_S).astype(np.int64))
        normal_per_s = counts[code] / max(own_hours.size, 1) / HOUR_S
        rate = _draw(rng, spec.runaway_factor) * normal_per_s
        start, end = _window(rng, spec.span_s, _draw(rng, spec.runaway_minutes) * 60.0)
        t = rng.uniform(start, end, int(rng.poisson(rate * (end - start))))
        # A client stuck in a loop repeats one call.
        self.parts.add(t, code, _ROUTE_INDEX["/api/v1/items/{id}"], 200)
        self.label(code, "runaway", start, end)

    def distributed(self) -> None:
        rng, spec = self.rng, self.spec
        n_clients = max(int(_draw(rng, spec.distributed_clients)), 2)
        total = _draw(rng, spec.distributed_share) * self.capacity
        start, end = _window(rng, spec.span_s, _draw(rng, spec.distributed_hours) * HOUR_S)
        duration = end - start
        # Credential stuffing: each client tries logins at a modest rate, mostly refused.
        for rate in total / n_clients * rng.uniform(0.5, 1.5, n_clients):
            own_start = start + float(rng.uniform(0.0, 0.1)) * duration
            own_end = end - float(rng.uniform(0.0, 0.1)) * duration
            n = max(int(rng.poisson(rate * (own_end - own_start))), 1)
            t = rng.uniform(own_start, own_end, n)
            status = np.asarray([401, 200, 403], dtype=np.int16)[_choice(rng, [0.85, 0.1, 0.05], n)]
            code = self.new_client()
            self.parts.add(t, code, _ROUTE_INDEX["/api/v1/session"], status)
            self.label(code, "distributed", own_start, own_end)

    def run(self) -> list[AbuseLabel]:
        steps = {"scraper": self.scraper, "runaway": self.runaway, "distributed": self.distributed}
        for k in range(self.spec.abusive):
            steps[ABUSE_KINDS[k % len(ABUSE_KINDS)]]()
        return self.labels


def _bounded_backlog(arrivals: F64, capacity: float, qmax: float) -> tuple[F64, F64]:
    """Backlog at the end of each second of a server of ``capacity`` requests/s whose queue
    holds at most ``qmax`` requests, and the requests shed each second.

    Lindley's recursion ``Q_n = min(max(Q_{n-1} + a_n - c, 0), qmax)``. While the cap is not
    hit it has the closed form ``Q_n = X_n - min(-Q_0, min_k X_k)`` (``X`` the cumulative
    excess), vectorised per block; only the seconds from a cap hit until the queue empties
    again take the scalar path (overloads are short next to the span).
    """
    n = arrivals.size
    excess = arrivals - capacity
    queue = np.zeros(n)
    shed = np.zeros(n)
    i = 0
    q = 0.0
    block = 65_536
    while i < n:
        x = np.cumsum(excess[i : i + block])
        qq = x - np.minimum(np.minimum.accumulate(x), -q)
        over = np.flatnonzero(qq > qmax)
        if over.size == 0:
            queue[i : i + qq.size] = qq
            q = float(qq[-1])
            i += qq.size
            continue
        j = int(over[0])
        queue[i : i + j] = qq[:j]
        q = float(qq[j - 1]) if j else q
        i += j
        while i < n:  # scalar until the queue drains
            q += float(excess[i])
            if q > qmax:
                shed[i] = q - qmax
                q = qmax
            elif q <= 0.0:
                q = 0.0
            queue[i] = q
            i += 1
            if q == 0.0:
                break
    return queue, shed


def _backend(
    rng: np.random.Generator,
    spec: SyntheticSpec,
    *,
    t: F64,
    route: npt.NDArray[np.uint8],
    status: npt.NDArray[np.int16],
    capacity: float,
) -> tuple[F64, npt.NDArray[np.int16]]:
    """Response times and final statuses from the load every request met."""
    n_sec = math.ceil(spec.span_s)
    sec = np.minimum(t.astype(np.int64), n_sec - 1)
    arrivals = np.bincount(sec, minlength=n_sec).astype(np.float64)
    w = spec.load_window_s
    csum = np.concatenate(([0.0], np.cumsum(arrivals)))
    lo = np.maximum(np.arange(1, n_sec + 1) - w, 0)
    rho_s = (csum[1:] - csum[lo]) / (w * capacity)
    queue, shed = _bounded_backlog(arrivals, capacity, spec.max_queue_s * capacity)
    rho = rho_s[sec]
    base = np.asarray([r.base_ms for r in ROUTES])[route]
    service = base * np.exp(rng.normal(0.0, spec.rt_sigma, t.size)) / (1.0 - np.minimum(rho, 0.95))
    rt = service + 1000.0 * queue[sec] / capacity
    out = status.copy()
    p500 = spec.base_5xx * (1.0 + 60.0 * np.clip(rho - 0.8, 0.0, None))
    out[rng.random(t.size) < p500] = 500
    timed_out = rt > spec.timeout_ms
    out[timed_out] = 504
    rt[timed_out] = spec.timeout_ms
    p_shed = np.divide(shed, arrivals, out=np.zeros(n_sec), where=arrivals > 0)[sec]
    refused = rng.random(t.size) < p_shed
    out[refused] = 503
    rt[refused] = 1.0 + rng.exponential(2.0, int(refused.sum()))
    return np.round(rt, 3), out


def _bytes(
    rng: np.random.Generator, route: npt.NDArray[np.uint8], status: npt.NDArray[np.int16]
) -> I64:
    median = np.asarray([r.median_bytes for r in ROUTES])[route]
    size = np.rint(median * np.exp(rng.normal(0.0, 0.8, route.size))).astype(np.int64)
    size[status == 304] = 0
    errors = status >= 400
    size[errors] = 150 + rng.integers(0, 300, int(errors.sum()))
    return np.asarray(size, dtype=np.int64)


def generate(spec: SyntheticSpec, *, seed: int) -> tuple[SyntheticTraffic, tuple[AbuseLabel, ...]]:
    """Generate ``spec``'s traffic: the events (iterate for EventBatch chunks) and the labels
    of the abusive clients. Pure and deterministic in ``(spec, seed)``."""
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed!r}")
    # Separate streams: adding abuse or changing the backend leaves the legitimate arrivals
    # the same, so experiments differ only in what they change.
    legit_rng, abuse_rng, backend_rng, misc_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    names = _client_names(seed, 0, spec.clients)
    parts = _Parts()
    _legit_events(legit_rng, spec, parts)
    capacity = spec.capacity_rps
    if capacity is None:
        legit_t = parts.t[0]
        per_hour = np.bincount((legit_t // HOUR_S).astype(np.int64))
        hours = np.minimum(spec.span_s - np.arange(per_hour.size) * HOUR_S, HOUR_S)
        busiest = float(np.max(per_hour / hours)) if per_hour.size else 0.0
        capacity = max(spec.min_capacity_rps, spec.headroom * busiest)
    labels = _Abuse(abuse_rng, spec, parts, capacity, names, seed).run()

    t = np.concatenate(parts.t)
    order = np.argsort(t, kind="stable")
    t = t[order]
    client = np.concatenate(parts.client)[order]
    route = np.concatenate(parts.route)[order]
    status = np.concatenate(parts.status)[order]
    rt, status = _backend(backend_rng, spec, t=t, route=route, status=status, capacity=capacity)
    methods = np.asarray([METHODS.index(r.method) for r in ROUTES], dtype=np.uint8)[route]
    # A few GETs are HEADs (0.3% in the trace).
    methods[(methods == 0) & (misc_rng.random(t.size) < 0.003)] = METHODS.index("HEAD")
    size = _bytes(misc_rng, route, status)
    ts_us = spec.start_us + np.rint(t * US).astype(np.int64)
    # Ids from what was generated, not from how the spec was spelled (days=1 or 1.0): the
    # same events get the same ids, other events other ids.
    hasher = hashlib.blake2b(f"{seed}|".encode(), digest_size=6)
    hasher.update(ts_us.tobytes())
    hasher.update(client.tobytes())
    digest = hasher.hexdigest()
    traffic = SyntheticTraffic(
        client_names=object_array(names),
        client=client,
        ts_us=ts_us,
        status_code=status,
        response_time_ms=rt,
        route=route,
        method=methods,
        bytes=size,
        id_prefix=f"g{digest}-",
        capacity_rps=capacity,
        chunk_size=spec.chunk_size,
        legit_clients=spec.clients,
    )
    return traffic, tuple(labels)


# -- labels CSV, JSON lines --------------------------------------------------------------------


def format_timestamp(ts_us: I64) -> npt.NDArray[np.str_]:
    """RFC 3339 UTC with microseconds, vectorised (``2024-01-01T00:00:00.000000Z``)."""
    text = np.datetime_as_string(ts_us.astype("datetime64[us]"), unit="us")
    return np.char.add(text, "Z")


def write_labels_csv(labels: Sequence[AbuseLabel], path: Path) -> None:
    starts = format_timestamp(np.asarray([lb.start_us for lb in labels], dtype=np.int64))
    ends = format_timestamp(np.asarray([lb.end_us for lb in labels], dtype=np.int64))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(LABEL_COLUMNS)
        for lb, s, e in zip(labels, starts.tolist(), ends.tolist(), strict=True):
            writer.writerow((lb.client_id, lb.kind, s, e))


def read_labels_csv(path: Path) -> list[AbuseLabel]:
    """Labels as :func:`write_labels_csv` writes them; a bad row names the file and line."""
    from openclaw.telemetry.events import parse_timestamp

    out: list[AbuseLabel] = []
    kinds: dict[str, AbuseKind] = {k: k for k in ABUSE_KINDS}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(header) != LABEL_COLUMNS:
            raise IngestError(f"{path}:1: expected the header {','.join(LABEL_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                client_id, text, start, end = row
                kind = kinds.get(text)
                if kind is None:
                    raise ValueError(f"unknown kind {text!r}")
                out.append(
                    AbuseLabel(client_id, kind, parse_timestamp(start), parse_timestamp(end))
                )
            except ValueError as exc:
                raise IngestError(f"{path}:{line}: {exc}") from exc
    return out


def batch_to_jsonl(batch: EventBatch) -> bytes:
    """The batch as JSON lines, in the schema ``openclaw ingest --format jsonl`` reads."""
    import orjson

    stamps = format_timestamp(batch.ts_us).tolist()
    rows = zip(
        batch.event_id.tolist(),
        batch.client_id.tolist(),
        stamps,
        batch.response_time_ms.tolist(),
        batch.status_code.tolist(),
        batch.route.tolist(),
        batch.method.tolist(),
        batch.bytes.tolist(),
        strict=True,
    )
    dumps = orjson.dumps
    return b"".join(
        dumps(
            {
                "event_id": e,
                "client_id": c,
                "timestamp": ts,
                "response_time_ms": rt,
                "status_code": st,
                "route": r,
                "method": m,
                "bytes": b,
            }
        )
        + b"\n"
        for e, c, ts, rt, st, r, m, b in rows
    )


# -- reading a trace ---------------------------------------------------------------------------


def read_trace(path: Path, fmt: str = "nasa-tsv") -> EventBatch:
    """A log file's events through ``openclaw ingest``'s own parsers (rejected lines left out:
    calibration needs the good ones only). Raises IngestError when it cannot be read or holds
    no event."""
    from openclaw.telemetry.parsers import FORMATS, parse_file

    if fmt not in FORMATS:
        raise IngestError(f"unknown trace format {fmt!r}: use one of {', '.join(FORMATS)}")
    batch = EventBatch.concat([chunk.batch for chunk in parse_file(path, fmt)])
    if len(batch) == 0:
        raise IngestError(f"{path}: no events in the trace")
    return batch


# -- fitting the model to a trace --------------------------------------------------------------


def _normal_sf(x: F64) -> F64:
    """P(Z > x) of a standard normal, vectorised, with small relative error far in the tails
    (Numerical Recipes' erfc, fractional error below 1.2e-7): the likelihoods below take
    differences of tail probabilities."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -1.26551223 + t * (
        1.00002368
        + t
        * (
            0.37409196
            + t
            * (
                0.09678418
                + t
                * (
                    -0.18628806
                    + t
                    * (
                        0.27886807
                        + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                    )
                )
            )
        )
    )
    erfc = t * np.exp(-z * z + poly)
    return np.asarray(0.5 * np.where(x >= 0, erfc, 2.0 - erfc), dtype=np.float64)


def _fit_bursts_per_session(values: I64) -> tuple[float, float, float]:
    """MLE (on a grid) of (bounce share, mu, sigma): K = 1 with the bounce share, else
    ``max(1, ceil(exp(Normal(mu, sigma))))``."""
    ks, counts = np.unique(values, return_counts=True)
    upper = np.log(ks.astype(np.float64))
    lower = np.where(ks > 1, np.log(np.maximum(ks - 1, 1).astype(np.float64)), -np.inf)
    mus = np.arange(-1.0, 4.0, 0.02)[:, None, None]
    sigmas = np.arange(0.1, 3.0, 0.02)[None, :, None]
    q = np.maximum(_normal_sf((lower - mus) / sigmas) - _normal_sf((upper - mus) / sigmas), 1e-300)
    one = (ks == 1).astype(np.float64)
    best = (-math.inf, 0.0, 0.0, 1.0)
    for share in np.arange(0.0, 0.8, 0.01):
        loglik = (counts * np.log(share * one + (1.0 - share) * q)).sum(axis=-1)
        i, j = np.unravel_index(int(np.argmax(loglik)), loglik.shape)
        if loglik[i, j] > best[0]:
            best = (float(loglik[i, j]), float(share), float(mus[i, 0, 0]), float(sigmas[0, j, 0]))
    return round(best[1], 2), round(best[2], 2), round(best[3], 2)


def _fit_session_rates(sessions: I64, exposure: float) -> tuple[float, float]:
    """MLE of the lognormal of lambda from sessions per client (each client seen, so the
    Poisson-lognormal mixture is zero-truncated), by quadrature over log lambda."""
    grid = np.linspace(-12.0, 8.0, 1601)
    lam = np.exp(grid) * exposure
    ks, counts = np.unique(sessions, return_counts=True)
    log_fact = np.asarray([math.lgamma(int(k) + 1) for k in ks])
    pmf = np.exp(ks[:, None] * np.log(lam)[None, :] - lam[None, :] - log_fact[:, None])
    p_zero = np.exp(-lam)

    def nll(mu: float, sigma: float) -> float:
        w = np.exp(-0.5 * ((grid - mu) / sigma) ** 2)
        w /= w.sum()
        pk = np.maximum(pmf @ w, 1e-300)
        return float(-(counts * np.log(pk / (1.0 - float(p_zero @ w)))).sum())

    best = (math.inf, 0.0, 1.0)
    for mu in np.arange(-8.0, 3.0, 0.1):
        for sigma in np.arange(0.1, 4.0, 0.1):
            v = nll(float(mu), float(sigma))
            if v < best[0]:
                best = (v, float(mu), float(sigma))
    return round(best[1], 1), round(best[2], 1)


def _fit_within_gaps(gaps: F64, upper: float, resolution_s: float | None) -> tuple[float, float]:
    """MLE (on a grid) of the Gamma(shape, scale) gap inside bursts, truncated at ``upper``.

    Gaps measured on whole-second timestamps are differences of floored times, so the model's
    gap is floored the same way (with a uniform phase) before it meets the data; on finer
    timestamps the data are binned. The model's distribution comes from a fixed-seed sample
    per shape (scaled for each scale), which keeps the fit deterministic.
    """
    if gaps.size < 10:
        return 0.6, 2.0
    sample_rng = np.random.default_rng(20_240_101)
    phase = sample_rng.random(100_000)
    if resolution_s:
        unit = resolution_s
        observed = np.rint(gaps / unit)
        edges = np.arange(-0.5, float(observed.max()) + 1.5)
    else:
        unit = 1.0
        observed = gaps
        edges = np.concatenate(([0.0], np.geomspace(1e-3, upper, 40)))
    counts = np.histogram(observed, bins=edges)[0]
    best = (math.inf, 0.6, 2.0)
    for shape in np.arange(0.1, 3.001, 0.05):
        base = sample_rng.gamma(float(shape), 1.0, phase.size)
        for scale in np.geomspace(0.05, 20.0, 80):
            x = base * scale
            if resolution_s:
                model = np.floor(phase + x / unit)
                model = model[model <= upper / unit]
            else:
                model = x[x < upper]
            if model.size < 1000:
                continue
            p = np.histogram(model, bins=edges)[0] / model.size
            v = float(-(counts * np.log(np.maximum(p, 1e-6))).sum())
            if v < best[0]:
                best = (v, float(shape), float(scale))
    return round(best[1], 2), round(best[2], 3)


def _hour_profile(ts_s: F64) -> tuple[float, ...]:
    """Requests per hour of day (UTC) over the hours the trace covers, the others interpolated
    log-linearly around the clock between the nearest covered hours; mean 1."""
    first, last = float(ts_s.min()), float(ts_s.max()) + 1.0
    counts = np.bincount(((ts_s // HOUR_S) % 24).astype(np.int64), minlength=24).astype(np.float64)
    covered = np.zeros(24)
    h = math.floor(first / HOUR_S)
    while h * HOUR_S < last:
        lo, hi = max(first, h * HOUR_S), min(last, (h + 1) * HOUR_S)
        covered[h % 24] += (hi - lo) / HOUR_S
        h += 1
    known = covered >= 0.5  # a sliver of an hour says little about its rate
    if known.sum() < 2:
        raise ConfigError("the trace covers too few hours to fit a daily profile")
    rate = np.where(known, counts / np.maximum(covered, 1e-9), 0.0)
    idx = np.flatnonzero(known)
    log_rate = np.log(np.maximum(rate[idx], 1e-9))
    xs = np.concatenate((idx - 24, idx, idx + 24)).astype(np.float64)
    ys = np.concatenate((log_rate, log_rate, log_rate))
    profile = np.where(known, rate, np.exp(np.interp(np.arange(24.0), xs, ys)))
    profile /= profile.mean()
    return tuple(round(float(v), 4) for v in profile)


def fit_batch(
    batch: EventBatch, *, burst_gap_s: float = 5.0, session_gap_s: float = 1800.0
) -> TrafficModel:
    """:func:`fit_trace` of a batch's times, clients and statuses."""
    return fit_trace(
        batch.ts_us,
        batch.client_id,
        statuses=batch.status_code,
        burst_gap_s=burst_gap_s,
        session_gap_s=session_gap_s,
    )


def fit_trace(
    ts_us: I64,
    client: npt.ArrayLike,
    *,
    burst_gap_s: float = 5.0,
    session_gap_s: float = 1800.0,
    max_burst: int = 16,
    statuses: npt.ArrayLike | None = None,
) -> TrafficModel:
    """Estimate the legitimate-traffic model from a trace (any client ids, any resolution)."""
    ts_us = np.asarray(ts_us, dtype=np.int64)
    _, codes = np.unique(np.asarray(client), return_inverse=True)
    order = np.lexsort((ts_us, codes))
    t = ts_us[order] / US
    c = codes[order]
    gaps = np.diff(t)
    same = c[1:] == c[:-1]
    new_session = np.concatenate(([True], ~same | (gaps > session_gap_s)))
    new_burst = np.concatenate(([True], ~same | (gaps > burst_gap_s)))
    burst_id = np.cumsum(new_burst) - 1
    burst_size = np.minimum(np.bincount(burst_id), max_burst)
    opens_session = new_session[new_burst]
    first_pmf = np.bincount(burst_size[opens_session], minlength=max_burst + 1)[1:]
    later_pmf = np.bincount(burst_size[~opens_session], minlength=max_burst + 1)[1:]
    session_of_burst = (np.cumsum(new_session) - 1)[new_burst]
    bursts_per_session = np.bincount(session_of_burst)
    within = gaps[same & (gaps <= burst_gap_s)]
    think = gaps[same & (gaps > burst_gap_s) & (gaps <= session_gap_s)] - burst_gap_s
    sessions_per_client = np.bincount(c[new_session])

    profile = _hour_profile(t)
    span_s = float(t.max() - t.min()) + 1.0
    # Exposure: the trace's share of a weekday's intensity, the profile integrated over it.
    hours = np.arange(math.floor(t.min() / HOUR_S), math.ceil((t.max() + 1) / HOUR_S))
    cover = np.clip(
        np.minimum((hours + 1) * HOUR_S, t.max() + 1) - np.maximum(hours * HOUR_S, t.min()), 0, None
    )
    prof = np.asarray(profile) / 24.0
    exposure = float((prof[hours % 24] * cover / HOUR_S).sum()) if span_s > 0 else 1.0
    mu_l, sigma_l = _fit_session_rates(sessions_per_client, exposure)
    bounce, mu_b, sigma_b = _fit_bursts_per_session(bursts_per_session)

    whole_seconds = bool(np.all(ts_us % US == 0))
    shape, scale = _fit_within_gaps(within, burst_gap_s, 1.0 if whole_seconds else None)
    log_think = np.log(np.maximum(think, 1e-3))
    status_mix: tuple[tuple[int, float], ...] = NASA_MODEL.status_mix
    if statuses is not None:
        codes_s, counts_s = np.unique(np.asarray(statuses, dtype=np.int64), return_counts=True)
        share = counts_s / counts_s.sum()
        keep = share >= 0.001
        status_mix = tuple(
            (int(k), round(float(v), 4))
            for k, v in zip(codes_s[keep], share[keep] / share[keep].sum(), strict=True)
        )
    return TrafficModel(
        hour_profile=profile,
        sessions_log_mu=mu_l,
        sessions_log_sigma=sigma_l,
        bounce_share=bounce,
        bursts_log_mu=mu_b,
        bursts_log_sigma=sigma_b,
        first_burst_pmf=tuple(round(float(v), 4) for v in first_pmf / max(first_pmf.sum(), 1)),
        burst_size_pmf=tuple(round(float(v), 4) for v in later_pmf / max(later_pmf.sum(), 1)),
        within_gap_shape=shape,
        within_gap_scale_s=scale,
        think_log_mu=round(float(log_think.mean()), 2),
        think_log_sigma=round(float(log_think.std()), 2),
        burst_gap_s=burst_gap_s,
        session_gap_s=session_gap_s,
        status_mix=status_mix,
    )


# -- calibration: per-client rate and burst distributions of any event set ----------------------


@dataclass(frozen=True, slots=True)
class Quantiles:
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: npt.ArrayLike) -> Quantiles:
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return cls(math.nan, math.nan, math.nan, math.nan)
        p50, p90, p99 = np.percentile(v, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(v.max()))


@dataclass(frozen=True, slots=True)
class TrafficStats:
    """Per-client rate and burst distributions of an event set.

    Per client-day (UTC days): requests, and the most requests in any 1 s / 10 s / 60 s
    (sliding, half-open windows, as the features' labels count them), and the label bucket
    ``b*(r*)`` with ``r* = peak_60s / 60``. Per client-hour (clock hours with a request):
    requests. Structure: bursts (gaps <= burst_gap_s), bursts per session (gaps <= session_gap_s).
    """

    events: int
    clients: int
    client_days: int
    span_h: float
    mean_rps: float
    per_client_day: Quantiles
    per_client_hour: Quantiles
    peak_1s: Quantiles
    peak_10s: Quantiles
    peak_60s: Quantiles
    label_b_star: Quantiles
    burst_size: Quantiles
    bursts_per_session: Quantiles
    sessions_per_client_day: Quantiles
    think_time_s: Quantiles
    #: Share of a day's requests sent by that day's busiest 1% of clients, averaged over days
    #: (per day: over a longer span the share grows as the big clients add up).
    top1_share: float
    #: Share of requests per UTC hour of day.
    hour_share: tuple[float, ...]


def traffic_stats(
    ts_us: npt.ArrayLike,
    client: npt.ArrayLike,
    *,
    resolution_s: float | None = None,
    burst_gap_s: float = 5.0,
    session_gap_s: float = 1800.0,
) -> TrafficStats:
    """Measure an event set. ``resolution_s`` floors the times first (1.0 compares generated
    microsecond times with a log's whole seconds, like for like)."""
    ts = np.asarray(ts_us, dtype=np.int64)
    if ts.size == 0:
        raise ConfigError("no events to measure")
    if resolution_s is not None:
        step = round(resolution_s * US)
        ts = ts // step * step
    _, codes = np.unique(np.asarray(client), return_inverse=True)
    codes = codes.astype(np.int64)
    day = ts // (86_400 * US)
    order = np.lexsort((ts, day, codes))
    ts, codes, day = ts[order], codes[order], day[order]
    group_key = codes * (int(day.max() - day.min()) + 1) + (day - day.min())
    starts = np.flatnonzero(np.concatenate(([True], np.diff(group_key) != 0)))
    offsets = np.append(starts, ts.size).astype(np.intp)
    per_day = np.diff(offsets)
    peaks = {h: segmented_sliding_peak(ts, offsets, h * US) for h in (1, 10, 60)}
    rel_s = (ts - np.repeat(ts[starts], per_day)) / US
    b_star = segmented_envelope(rel_s, offsets, (peaks[60] / 60.0)[:, None])[:, 0]

    hour_key = codes * (int(ts.max() // (3600 * US)) + 1) + ts // (3600 * US)
    _, per_hour = np.unique(hour_key, return_counts=True)

    t = ts / US
    gaps = np.diff(t)
    same = np.diff(group_key) == 0
    new_burst = np.concatenate(([True], ~same | (gaps > burst_gap_s)))
    new_session = np.concatenate(([True], ~same | (gaps > session_gap_s)))
    burst_sizes = np.diff(np.append(np.flatnonzero(new_burst), ts.size))
    session_of_burst = (np.cumsum(new_session) - 1)[new_burst]
    sessions_per_group = np.bincount(np.repeat(np.arange(per_day.size), per_day)[new_session])
    think = gaps[same & (gaps > burst_gap_s) & (gaps <= session_gap_s)]

    group_day = day[starts]
    shares = []
    for d in np.unique(group_day):
        sizes = np.sort(per_day[group_day == d])[::-1]
        shares.append(sizes[: max(sizes.size // 100, 1)].sum() / sizes.sum())
    hours = np.bincount((ts // (3600 * US)) % 24, minlength=24)
    span_s = (ts.max() - ts.min()) / US + (resolution_s or 0.0)
    return TrafficStats(
        events=int(ts.size),
        clients=int(np.unique(codes).size),
        client_days=int(per_day.size),
        span_h=span_s / HOUR_S,
        mean_rps=ts.size / max(span_s, 1.0),
        per_client_day=Quantiles.of(per_day),
        per_client_hour=Quantiles.of(per_hour),
        peak_1s=Quantiles.of(peaks[1]),
        peak_10s=Quantiles.of(peaks[10]),
        peak_60s=Quantiles.of(peaks[60]),
        label_b_star=Quantiles.of(b_star),
        burst_size=Quantiles.of(burst_sizes),
        bursts_per_session=Quantiles.of(np.bincount(session_of_burst)),
        sessions_per_client_day=Quantiles.of(sessions_per_group),
        think_time_s=Quantiles.of(think),
        top1_share=float(np.mean(shares)),
        hour_share=tuple(float(v) for v in hours / hours.sum()),
    )


def abuse_mask(traffic: SyntheticTraffic, labels: Sequence[AbuseLabel]) -> Bool:
    """Events sent by a labelled client inside its labelled interval."""
    index = {str(name): i for i, name in enumerate(traffic.client_names.tolist())}
    mask = np.zeros(len(traffic), dtype=np.bool_)
    for lb in labels:
        code = index.get(lb.client_id)
        if code is None:
            continue
        mask |= (
            (traffic.client == code) & (traffic.ts_us >= lb.start_us) & (traffic.ts_us < lb.end_us)
        )
    return mask


def time_of_day_window(ts_us: I64) -> tuple[int, int]:
    """The trace's ``[first, last]`` second of the day (UTC); the whole day if it spans one."""
    ts = np.asarray(ts_us, dtype=np.int64)
    if int(ts.max() - ts.min()) >= 86_400 * US - US:
        return 0, 86_400
    first = int(ts.min() // US % 86_400)
    last = int(ts.max() // US % 86_400)
    return (first, last) if first <= last else (0, 86_400)


def restrict_to_time_of_day(ts_us: I64, window: tuple[int, int]) -> Bool:
    """Events whose second of the (UTC) day lies in ``[first, last]``."""
    tod = ts_us // US % 86_400
    return (tod >= window[0]) & (tod <= window[1])


def _clock(second_of_day: int) -> str:
    return f"{second_of_day // 3600:02d}:{second_of_day % 3600 // 60:02d}"


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.2f}"


def calibration_report(
    real: TrafficStats,
    generated: TrafficStats,
    generated_native: TrafficStats,
    *,
    real_name: str,
    generated_name: str,
    window: tuple[int, int],
) -> str:
    """Markdown: the real trace against the generated traffic, side by side."""
    rows: list[tuple[str, Quantiles, Quantiles]] = [
        ("requests per client-day", real.per_client_day, generated.per_client_day),
        ("requests per client-hour", real.per_client_hour, generated.per_client_hour),
        ("peak requests in 1 s", real.peak_1s, generated.peak_1s),
        ("peak requests in 10 s", real.peak_10s, generated.peak_10s),
        ("peak requests in 60 s", real.peak_60s, generated.peak_60s),
        ("label b*(r*), r* = peak 60 s / 60", real.label_b_star, generated.label_b_star),
        (
            "sessions per client-day",
            real.sessions_per_client_day,
            generated.sessions_per_client_day,
        ),
        ("bursts per session", real.bursts_per_session, generated.bursts_per_session),
        ("requests per burst", real.burst_size, generated.burst_size),
        ("think time between bursts, s", real.think_time_s, generated.think_time_s),
    ]
    tod = f"{_clock(window[0])}-{_clock(window[1])} UTC"
    out = [
        f"Real: {real_name}. Generated: {generated_name}, legitimate traffic only (labelled abuse "
        f"left out), restricted to the trace's hours of the day ({tod}) and floored to whole "
        "seconds like the log. Per client-day statistics count each (client, UTC day) with a "
        "request once; peaks are sliding windows.",
        "",
        "| | real | generated |",
        "| --- | --- | --- |",
        f"| events | {real.events:,} | {generated.events:,} |",
        f"| clients | {real.clients:,} | {generated.clients:,} |",
        f"| client-days | {real.client_days:,} | {generated.client_days:,} |",
        f"| busiest 1% of a day's clients: share of its requests | {real.top1_share:.1%} | "
        f"{generated.top1_share:.1%} |",
        "",
        "| per client | p50 real | p50 gen | p90 real | p90 gen | p99 real | p99 gen "
        "| max real | max gen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, a, b in rows:
        out.append(
            f"| {name} | {_fmt(a.p50)} | {_fmt(b.p50)} | {_fmt(a.p90)} | {_fmt(b.p90)} | "
            f"{_fmt(a.p99)} | {_fmt(b.p99)} | {_fmt(a.max)} | {_fmt(b.max)} |"
        )
    n = generated_native.peak_1s
    out.append(
        f"| peak in 1 s, generated at microsecond resolution | | {_fmt(n.p50)} | | "
        f"{_fmt(n.p90)} | | {_fmt(n.p99)} | | {_fmt(n.max)} |"
    )
    out += [
        "",
        "Hour-of-day profile (share of requests per UTC hour; the generated column is the same",
        "restricted window, so the shares compare directly):",
        "",
        "| UTC hour | real | generated |",
        "| --- | --- | --- |",
    ]
    for h, (share_real, share_gen) in enumerate(
        zip(real.hour_share, generated.hour_share, strict=True)
    ):
        if share_real > 0 or share_gen > 0:
            out.append(f"| {h:02d} | {share_real:.1%} | {share_gen:.1%} |")
    return "\n".join(out) + "\n"


def calibrate(
    traffic: SyntheticTraffic,
    labels: Sequence[AbuseLabel],
    real_ts_us: I64,
    real_client: npt.ArrayLike,
    *,
    real_name: str,
    generated_name: str,
) -> str:
    """The calibration report of ``traffic`` against a real trace (see calibration_report)."""
    window = time_of_day_window(real_ts_us)
    keep = restrict_to_time_of_day(traffic.ts_us, window) & ~abuse_mask(traffic, labels)
    keep &= traffic.client < traffic.legit_clients
    if not keep.any():
        raise ConfigError("no generated legitimate events inside the trace's hours of the day")
    ts, client = traffic.ts_us[keep], traffic.client[keep]
    return calibration_report(
        traffic_stats(real_ts_us, real_client),
        traffic_stats(ts, client, resolution_s=1.0),
        traffic_stats(ts, client),
        real_name=real_name,
        generated_name=generated_name,
        window=window,
    )


# -- the command's shell (`openclaw generate`) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    spec: SyntheticSpec
    seed: int
    out: Path | None = None
    store_url: str | None = None
    labels_path: Path | None = None
    report_path: Path | None = None
    trace_path: Path | None = None
    command: str = "openclaw generate"


@dataclass(frozen=True, slots=True)
class GenerateSummary:
    events: int
    clients: int
    labels: int
    capacity_rps: float
    generate_s: float
    write_s: float
    stored: int | None  #: rows the store found new (None without --store)


def start_of_day_us(text: str) -> int:
    """``YYYY-MM-DD`` to the epoch microseconds of its UTC midnight."""
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError(f"--start {text!r} is not a date YYYY-MM-DD") from None
    return round(day.timestamp()) * US


def _write_jsonl(traffic: SyntheticTraffic, path: Path, progress: _Progress) -> None:
    import gzip

    try:
        with (
            gzip.open(path, "wb", compresslevel=5) if path.suffix == ".gz" else path.open("wb")
        ) as fh:
            for batch in traffic:
                fh.write(batch_to_jsonl(batch))
                progress(len(batch))
    except OSError as exc:
        raise IngestError(f"cannot write {path}: {exc.strerror or exc}") from exc


def run_generate(
    options: GenerateOptions,
    *,
    progress_total: _Start,
    progress: _Progress,
) -> GenerateSummary:
    """Generate, then write the JSON lines / insert into the store, the labels CSV and the
    calibration report. ``progress_total(n)`` announces the events to write, ``progress(k)``
    reports ``k`` more written."""
    import time

    if options.report_path is not None and options.trace_path is None:
        raise ConfigError("a calibration report needs the trace (--trace)")
    real = read_trace(options.trace_path) if options.report_path and options.trace_path else None
    t0 = time.perf_counter()
    traffic, labels = generate(options.spec, seed=options.seed)
    generate_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    stored: int | None = None
    if options.out is not None or options.store_url is not None:
        progress_total(len(traffic))
    if options.out is not None:
        _write_jsonl(traffic, options.out, progress)
    if options.store_url is not None:
        from openclaw.settings import Settings
        from openclaw.telemetry.stores import open_event_store

        store = open_event_store(options.store_url, settings=Settings())
        stored = 0
        try:
            for batch in traffic:
                stored += store.insert(batch)
                progress(len(batch))
        finally:
            store.close()
    write_s = time.perf_counter() - t1
    if options.labels_path is not None:
        try:
            write_labels_csv(labels, options.labels_path)
        except OSError as exc:
            raise IngestError(f"cannot write {options.labels_path}: {exc.strerror or exc}") from exc
    if real is not None and options.report_path is not None:
        spec = options.spec
        body = calibrate(
            traffic,
            labels,
            real.ts_us,
            real.client_id,
            real_name=f"`{options.trace_path}`",
            generated_name=f"{spec.days:g} days, {spec.clients:,} clients, seed {options.seed}",
        )
        title = "# Calibration: real trace against generated traffic"
        text = f"{title}\n\nCommand: `{options.command}`\n\n{body}"
        try:
            options.report_path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise IngestError(f"cannot write {options.report_path}: {exc.strerror or exc}") from exc
    return GenerateSummary(
        events=len(traffic),
        clients=int(traffic.client_names.size),
        labels=len(labels),
        capacity_rps=traffic.capacity_rps,
        generate_s=generate_s,
        write_s=write_s,
        stored=stored,
    )
