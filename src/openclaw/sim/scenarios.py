"""Scenarios: what is injected on top of the trace's evaluated part, and the run's demand.

Every scenario is a pure function of the trace, its parameters and a seed: the same seed gives
the same requests, bit for bit. A request is *legitimate* or *abusive* (``Demand.legit``), and
a client that sends any abusive request is an *abusive client*. Everything happens in the
evaluated part (after the split), at window boundaries picked at random by the seed.

``trace``
    Nothing injected: the cost of a policy to the trace's own clients.
``runaway``
    One existing client (one of the ``top`` busiest of the training part that is also active
    later) runs away for ``windows`` whole windows: it sends at ``20..100`` times its normal
    rate (its training requests divided by the time of its active windows), as a Poisson
    stream. During those windows *all* its requests are abusive, its own trace requests too:
    a runaway client is throttled as a whole, and a window is then wholly legitimate or wholly
    abusive for every client (which the hindsight oracle needs to be exact).
``scraper``
    A new client at a high constant rate (``rate_rps``, every gap jittered by 10%) for hours;
    its rate is far above any trace client's (their busiest minute is under 0.5/s).
``distributed``
    ``clients`` new clients together sending ``overload`` times the backend's capacity for
    ``duration_s``, each a Poisson stream far below any per-client limit; only a limit on the
    total (the governor) can help.
``flash_crowd``
    A benign surge: ``sessions`` real sessions (the arrivals of a client's window, drawn from
    the training part) start within ``duration_s``, densest in the middle (triangular); a
    share ``existing_share`` of them come from existing clients, the rest from new ones. All
    legitimate: a policy should let them through.
``capacity_drop``
    The backend loses workers and speed for ``duration_s`` (``workers``, ``speed``); the load
    is the trace's own.

Whole-second traces (old access logs) get each request spread uniformly over its second
(seeded), in the training part too; otherwise a page and its images would arrive at one
instant. A light trace is first *amplified* (copies superposed; ``calibrate`` says why and
how), training part included; the scenarios act on the amplified trace, and the flash crowd
scales its number of sessions with the copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from openclaw.sim.backend import BackendConfig, CapacityDrop
from openclaw.sim.labels import Segments, segment
from openclaw.sim.trace import Trace

US: Final = 1_000_000
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class RunawayConfig:
    multiplier: tuple[float, float] = (20.0, 100.0)
    windows: int = 6
    top: int = 10


@dataclass(frozen=True, slots=True)
class ScraperConfig:
    rate_rps: float = 4.0
    duration_s: float = 3 * 3600.0


@dataclass(frozen=True, slots=True)
class DistributedConfig:
    clients: int = 2000
    overload: float = 1.5
    duration_s: float = 10 * 60.0


@dataclass(frozen=True, slots=True)
class FlashCrowdConfig:
    #: Sessions per copy of the trace (see ``amplify``).
    sessions: int = 400
    existing_share: float = 0.3
    duration_s: float = 30 * 60.0


@dataclass(frozen=True, slots=True)
class CapacityDropConfig:
    duration_s: float = 3600.0
    workers: int = 1
    speed: float = 0.6


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    runaway: RunawayConfig = field(default_factory=RunawayConfig)
    scraper: ScraperConfig = field(default_factory=ScraperConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    flash_crowd: FlashCrowdConfig = field(default_factory=FlashCrowdConfig)
    capacity_drop: CapacityDropConfig = field(default_factory=CapacityDropConfig)


@dataclass(frozen=True, slots=True)
class Context:
    """What a scenario may look at: the trace split, the windows, the backend's size."""

    trace: Trace
    spread_us: I64  #: the trace's times after the in-second spread
    split_us: int
    end_us: int  #: end of the evaluated part (a window boundary)
    window_us: int
    train: Segments  #: the training part's (client, window) segments
    capacity_rps: float
    names: tuple[str, ...]  #: the trace's clients (with the copies')
    client: I64  #: per request of ``spread_us``
    amplify: int

    @property
    def eval_mask(self) -> Bool:
        mask: Bool = self.spread_us >= self.split_us
        return mask


@dataclass(frozen=True, slots=True)
class Injection:
    new_clients: tuple[str, ...] = ()
    ts_us: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    #: Indices into the trace's clients followed by ``new_clients``.
    client: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    legit: Bool = field(default_factory=lambda: np.empty(0, np.bool_))
    #: Trace requests (of the evaluated part, by position in it) that become abusive.
    relabel: Bool | None = None
    drops: tuple[CapacityDrop, ...] = ()
    note: str = ""
    #: The injected episode, ``[start, end)`` in epoch microseconds (None: nothing injected).
    period_us: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Demand:
    """Every request of one run at its first attempt, in time order, and what it needs.

    Times are epoch microseconds; the replay's float clock counts seconds from ``start_us``.
    """

    scenario: str
    seed: int
    note: str
    names: tuple[str, ...]
    client: I64
    ts_us: I64
    legit: Bool
    status: npt.NDArray[np.int16]
    start_us: int  #: the first evaluated window's start
    end_us: int  #: the end of the last evaluated window
    window_us: int
    horizon_us: int
    train: Segments  #: training part (client, window) segments, with labels
    #: The training part's requests themselves (time order), for whatever learns from them.
    train_ts_us: I64
    train_client: I64
    train_status: npt.NDArray[np.int16]
    drops: tuple[CapacityDrop, ...]
    #: Response times of the trace (ms, NaN unknown), for the backend's service times.
    observed_ms: npt.NDArray[np.float64]
    #: The injected episode, ``[start, end)`` in seconds on the replay's clock (None: none),
    #: for plots and reports; the replay never reads it.
    episode_s: tuple[float, float] | None = None
    #: Copies of the trace superposed (``calibrate``): the model hook divides each window's
    #: total by it, so ``traffic_share`` means what it meant in the unamplified training data.
    amplify: int = 1

    def __len__(self) -> int:
        return int(self.ts_us.size)

    @property
    def abusive_clients(self) -> I64:
        out: I64 = np.unique(self.client[~self.legit])
        return out

    @property
    def span_s(self) -> float:
        return (self.end_us - self.start_us) / US


def _period(ctx: Context, rng: np.random.Generator, length_us: int) -> tuple[int, int]:
    """A period of ``length_us`` starting at a window boundary of the evaluated part, drawn
    at random; cut to the evaluated part's length (less a window) when that is shorter."""
    first = ctx.split_us // ctx.window_us
    length_us = max(min(length_us, ctx.end_us - ctx.split_us - ctx.window_us), ctx.window_us)
    last = max((ctx.end_us - length_us) // ctx.window_us, first)
    return int(rng.integers(first, last + 1)) * ctx.window_us, length_us


def _poisson(rng: np.random.Generator, rate: float, start_us: int, end_us: int) -> I64:
    n = int(rng.poisson(rate * (end_us - start_us) / US))
    out: I64 = np.sort(rng.integers(start_us, end_us, size=n)).astype(np.int64)
    return out


def _trace_scenario(ctx: Context, rng: np.random.Generator, cfg: ScenarioConfig) -> Injection:
    return Injection(note="trace only")


def _runaway(ctx: Context, rng: np.random.Generator, cfg: ScenarioConfig) -> Injection:
    c = cfg.runaway
    train = ctx.train
    n_train = np.bincount(train.client, weights=train.n, minlength=len(ctx.names))
    windows = np.bincount(train.client, minlength=len(ctx.names))
    later = np.zeros(len(ctx.names), dtype=bool)
    later[ctx.client[ctx.eval_mask]] = True
    ranked = [int(i) for i in np.argsort(-n_train, kind="stable") if later[i] and n_train[i] > 0]
    if not ranked:
        raise ValueError("runaway: no client of the training part is active later")
    who = ranked[int(rng.integers(0, min(c.top, len(ranked))))]
    normal = n_train[who] / (windows[who] * ctx.window_us / US)
    mult = float(rng.uniform(*c.multiplier))
    start, length = _period(ctx, rng, c.windows * ctx.window_us)
    ts = _poisson(rng, mult * normal, start, start + length)
    ev_t = ctx.spread_us[ctx.eval_mask]
    ev_c = ctx.client[ctx.eval_mask]
    relabel = (ev_c == who) & (ev_t >= start) & (ev_t < start + length)
    return Injection(
        ts_us=ts,
        client=np.full(ts.size, who, np.int64),
        legit=np.zeros(ts.size, np.bool_),
        relabel=relabel,
        note=f"client #{who} at {mult:.0f}x its normal {normal:.3f}/s for {c.windows} windows "
        f"({ts.size} extra requests)",
        period_us=(start, start + length),
    )


def _scraper(ctx: Context, rng: np.random.Generator, cfg: ScenarioConfig) -> Injection:
    c = cfg.scraper
    start, length = _period(ctx, rng, round(c.duration_s * US))
    gap = US / c.rate_rps
    n = int(length / US * c.rate_rps)
    gaps = gap * rng.uniform(0.9, 1.1, size=n)
    ts = (start + np.cumsum(gaps)).astype(np.int64)
    ts = ts[ts < start + length]
    return Injection(
        new_clients=("scraper-1",),
        ts_us=ts,
        client=np.full(ts.size, len(ctx.names), np.int64),
        legit=np.zeros(ts.size, np.bool_),
        note=f"one new client at {c.rate_rps}/s for {length / US / 3600:.1f} h "
        f"({ts.size} requests)",
        period_us=(start, start + length),
    )


def _distributed(ctx: Context, rng: np.random.Generator, cfg: ScenarioConfig) -> Injection:
    c = cfg.distributed
    start, length = _period(ctx, rng, round(c.duration_s * US))
    total = c.overload * ctx.capacity_rps
    n = int(rng.poisson(total * length / US))
    ts = rng.integers(start, start + length, size=n).astype(np.int64)
    who = rng.integers(0, c.clients, size=n)
    base = len(ctx.names)
    width = len(str(c.clients))
    return Injection(
        new_clients=tuple(f"bot-{i:0{width}d}" for i in range(c.clients)),
        ts_us=ts,
        client=(base + who).astype(np.int64),
        legit=np.zeros(n, np.bool_),
        note=f"{c.clients} new clients, {total:.0f}/s together ({total / c.clients:.3f}/s each) "
        f"for {length / US / 60:.0f} min ({n} requests)",
        period_us=(start, start + length),
    )


def _flash_crowd(ctx: Context, rng: np.random.Generator, cfg: ScenarioConfig) -> Injection:
    c = cfg.flash_crowd
    train = ctx.train
    if not len(train):
        raise ValueError("flash_crowd: the training part has no sessions to draw from")
    start, length = _period(ctx, rng, round(c.duration_s * US))
    sessions = c.sessions * ctx.amplify
    picked = rng.integers(0, len(train), size=sessions)
    offsets = rng.triangular(0, length / 2, length, size=sessions).astype(np.int64)
    existing = rng.random(sessions) < c.existing_share
    n_old = len(ctx.names)
    pool = np.unique(train.client)
    old_ids = rng.choice(pool, size=int(existing.sum()), replace=pool.size < existing.sum())
    width = len(str(sessions))
    new_names = tuple(f"crowd-{i:0{width}d}" for i in range(int((~existing).sum())))
    owner = np.empty(sessions, np.int64)
    owner[existing] = old_ids
    owner[~existing] = n_old + np.arange(len(new_names))
    ts_parts: list[I64] = []
    cl_parts: list[I64] = []
    for k, seg in enumerate(picked.tolist()):
        lo, hi = int(train.offsets[seg]), int(train.offsets[seg + 1])
        rel = np.round((train.rel_s[lo:hi] - train.rel_s[lo]) * US).astype(np.int64)
        ts_parts.append(start + offsets[k] + rel)
        cl_parts.append(np.full(hi - lo, owner[k], np.int64))
    ts = np.concatenate(ts_parts)
    cl = np.concatenate(cl_parts)
    return Injection(
        new_clients=new_names,
        ts_us=ts,
        client=cl,
        legit=np.ones(ts.size, np.bool_),
        note=f"{sessions} sessions ({int(existing.sum())} from existing clients) within "
        f"{length / US / 60:.0f} min ({ts.size} requests)",
        period_us=(start, start + length),
    )


def _capacity_drop(ctx: Context, rng: np.random.Generator, cfg: ScenarioConfig) -> Injection:
    c = cfg.capacity_drop
    start, length = _period(ctx, rng, round(c.duration_s * US))
    origin = ctx.split_us
    drop = CapacityDrop(
        start_s=(start - origin) / US,
        end_s=(start + length - origin) / US,
        workers=c.workers,
        speed=c.speed,
    )
    return Injection(
        drops=(drop,),
        note=f"{c.workers} worker(s) at {c.speed}x speed for {length / US / 60:.0f} min "
        f"from {drop.start_s / 3600:.2f} h",
        period_us=(start, start + length),
    )


Generator = Callable[[Context, np.random.Generator, ScenarioConfig], Injection]
SCENARIOS: Final[Mapping[str, Generator]] = {
    "trace": _trace_scenario,
    "runaway": _runaway,
    "scraper": _scraper,
    "distributed": _distributed,
    "flash_crowd": _flash_crowd,
    "capacity_drop": _capacity_drop,
}
#: Per-scenario salt of the seed, so scenarios draw independent numbers for one seed.
_SALT: Final = {name: i + 1 for i, name in enumerate(SCENARIOS)}


#: Most copies ``calibrate`` superposes on its own.
MAX_AUTO_AMPLIFY: Final = 32
#: Most a copy of the trace is shifted in time (either way).
COPY_SHIFT_S: Final = 1800


@dataclass(frozen=True, slots=True)
class Calibration:
    """How big the load and the backend are (``calibrate``)."""

    amplify: int
    backend: BackendConfig
    #: Offered requests per second of the evaluated part (with the copies): mean, and the
    #: busiest 10 minutes (an upper bound: each copy's busiest 10 minutes, added).
    eval_rps: float
    peak_rps: float

    def describe(self) -> str:
        b = self.backend
        return (
            f"trace x{self.amplify}: {self.eval_rps:.1f} requests/s on average, "
            f"<= {self.peak_rps:.1f}/s in its busiest 10 min; backend {b.workers} workers, "
            f"service median {b.service_median_ms:g} ms (sigma {b.service_sigma:g}), "
            f"{b.capacity_rps:.0f} requests/s"
        )


def calibrate(
    trace: Trace,
    *,
    window_s: float,
    train_fraction: float = 1 / 3,
    target_rps: float = 10.0,
    headroom: float = 4.0,
    amplify: int | None = None,
    backend: BackendConfig | None = None,
) -> Calibration:
    """The load and the backend's size, from the trace.

    A 200 ms p99 SLO needs service times well under 200 ms, so one worker serves at least
    about 10 requests/s, and only a load above that can overload even a backend cut down to
    one worker. A light trace (the NASA one offers 0.8 requests/s in its evaluated part) is
    therefore *amplified*: ``amplify`` copies superposed, each copy's clients renamed
    (``host#3``) and shifted as a whole by up to 30 minutes (a seeded draw), so every client
    keeps its own behaviour and the day its shape. By default the copies bring the mean to
    ``target_rps``, with at most ``MAX_AUTO_AMPLIFY`` copies (a sparser log is better replayed
    with an explicit ``amplify``, or not at all). Then the workers: enough for ``headroom``
    times the busiest 10 minutes.
    """
    backend = backend or BackendConfig()
    window_us = round(window_s * US)
    split = trace.split_us(train_fraction, window_us=window_us)
    ev = trace.ts_us[trace.ts_us >= split]
    span_s = max((trace.end_us - split) / US, 1.0)
    rate = ev.size / span_s
    wanted = max(1, math.ceil(target_rps / rate))
    k = amplify if amplify is not None else min(wanted, MAX_AUTO_AMPLIFY)
    if k < 1:
        raise ValueError("amplify must be >= 1")
    bins = np.bincount((ev - split) // (600 * US))
    peak = float(bins.max()) / 600.0 * k
    workers = max(2, math.ceil(headroom * peak * backend.mean_service_s))
    return Calibration(
        amplify=k, backend=replace(backend, workers=workers), eval_rps=rate * k, peak_rps=peak
    )


def _amplified(
    trace: Trace, ts_us: I64, k: int, rng: np.random.Generator
) -> tuple[tuple[str, ...], I64, I64, npt.NDArray[np.int16], npt.NDArray[np.float64]]:
    """``k`` copies of the trace superposed (``calibrate`` says why), in time order."""
    names = trace.names
    client = trace.client.astype(np.int64)
    if k == 1:
        return names, ts_us, client, trace.status, trace.response_ms
    n = len(names)
    ts_parts = [ts_us]
    cl_parts = [client]
    keep_parts = [np.ones(ts_us.size, np.bool_)]
    for j in range(1, k):
        shifted = ts_us + int(rng.integers(-COPY_SHIFT_S, COPY_SHIFT_S + 1)) * US
        keep = (shifted >= trace.start_us) & (shifted <= trace.end_us)
        ts_parts.append(shifted)
        cl_parts.append(client + j * n)
        keep_parts.append(keep)
    keep_all = np.concatenate(keep_parts)
    ts_all = np.concatenate(ts_parts)[keep_all]
    order = np.argsort(ts_all, kind="stable")
    all_names = names + tuple(f"{name}#{j}" for j in range(1, k) for name in names)
    return (
        all_names,
        ts_all[order],
        np.concatenate(cl_parts)[keep_all][order],
        np.tile(trace.status, k)[keep_all][order],
        np.tile(trace.response_ms, k)[keep_all][order],
    )


def build_demand(
    trace: Trace,
    scenario: str,
    seed: int,
    *,
    window_s: float,
    horizon_s: float,
    train_fraction: float = 1 / 3,
    calibration: Calibration | None = None,
    config: ScenarioConfig | None = None,
) -> Demand:
    """The requests of one run: the trace's evaluated part plus the scenario's injection."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: use one of {', '.join(SCENARIOS)}")
    calibration = calibration or calibrate(
        trace, window_s=window_s, train_fraction=train_fraction, amplify=1
    )
    config = config or ScenarioConfig()
    window_us = round(window_s * US)
    horizon_us = round(horizon_s * US)
    rng = np.random.default_rng([seed, 0])
    ts = trace.ts_us
    if trace.whole_seconds:
        ts = ts + rng.integers(0, US, size=ts.size)
    names, ts, client, status, response_ms = _amplified(trace, ts, calibration.amplify, rng)
    split = trace.split_us(train_fraction, window_us=window_us)
    end = -(-(int(ts.max()) + 1) // window_us) * window_us
    is_train = ts < split
    train = segment(ts[is_train], client[is_train], window_us=window_us, horizon_us=horizon_us)
    ctx = Context(
        trace=trace,
        spread_us=ts,
        split_us=split,
        end_us=end,
        window_us=window_us,
        train=train,
        capacity_rps=calibration.backend.capacity_rps,
        names=names,
        client=client,
        amplify=calibration.amplify,
    )
    inj = SCENARIOS[scenario](ctx, np.random.default_rng([seed, _SALT[scenario]]), config)
    ev = ~is_train
    legit_trace = np.ones(int(ev.sum()), np.bool_)
    if inj.relabel is not None:
        legit_trace &= ~inj.relabel
    keep = (inj.ts_us >= split) & (inj.ts_us < end)
    all_ts = np.concatenate([ts[ev], inj.ts_us[keep]])
    order = np.argsort(all_ts, kind="stable")
    all_status = np.concatenate([status[ev], np.full(int(keep.sum()), 200, dtype=np.int16)]).astype(
        np.int16
    )
    return Demand(
        scenario=scenario,
        seed=seed,
        note=inj.note,
        names=names + inj.new_clients,
        client=np.concatenate([client[ev], inj.client[keep]])[order],
        ts_us=all_ts[order],
        legit=np.concatenate([legit_trace, inj.legit[keep]])[order],
        status=all_status[order],
        start_us=split,
        end_us=end,
        window_us=window_us,
        horizon_us=horizon_us,
        train=train,
        train_ts_us=ts[is_train],
        train_client=client[is_train],
        amplify=calibration.amplify,
        train_status=status[is_train],
        drops=inj.drops,
        observed_ms=response_ms,
        episode_s=None
        if inj.period_us is None
        else ((inj.period_us[0] - split) / US, (inj.period_us[1] - split) / US),
    )
