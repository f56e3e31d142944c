"""The replay: a run's demand, time-forward, through the real limiter engine and the backend.

One event loop on a simulated clock (integer microseconds, exact): first attempts come from
the demand in time order, retries from a heap, and at every window boundary the policy is
asked for the next window's buckets. Each attempt is decided by
``openclaw.limiter.core.refill_and_take``, the arithmetic every bucket store runs, with
``now`` in seconds since the window's start (as the feature code measures).

Choices, and why:

* **Buckets start full at every window boundary** (the state is keyed by (client, window)).
  The label ``(r*, b*)`` is defined for a bucket that starts full at the window's start; with
  state carried over, no policy (the oracle included) could promise a client its window's
  need, since a burst at the end of one window would eat into the next. It costs a policy at
  most one capacity of leaked abuse per client per window. The service itself keeps state
  across a parameter swap; ``reset_each_window=False`` replays that (and voids the oracle's
  guarantee).
* **Who retries**: a legitimate request that is throttled is retried after an exponential
  backoff, ``min(base 2^k, max) * U(jitter)`` for the k-th retry (0-based), at least the
  decision's ``retry_after`` (clients honour ``Retry-After``), at most ``max_retries`` times;
  a ``retry_after`` beyond ``max_retry_wait_s`` (infinite: it can never succeed) ends it at
  once, as a client does not wait minutes for one request. Then the request is *dropped*.
  Abusers ignore limits: they keep their schedule and never retry. Nobody retries a 5xx (so
  a retry is always the limiter's doing).
* **Common random numbers**: service times and retry jitter are drawn per request (and per
  retry) once per (scenario, seed), so every policy of a run faces the same draws.
* **The governor** (``+gov`` policies) is fed, at the end of each interval, the counts of the
  requests that *completed* in it (known by then: a request completes after it is admitted),
  and scales buckets by its multipliers from then on.
* **Under-allocation** is judged on the policy's buckets at the window boundary (before the
  governor): a legitimate client's window is under-allocated when its bucket ``(b, r)`` is
  below the realised need of its legitimate requests, ``b < b*(r)``.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from openclaw.features.core import P99, offsets_from_lengths, segmented_quantile
from openclaw.limiter.core import BucketParams, refill_and_take
from openclaw.policy.governor import GovernorState, scale_bucket
from openclaw.sim.backend import Backend, BackendConfig, service_times
from openclaw.sim.history import Attempts, History
from openclaw.sim.labels import Segments, segment
from openclaw.sim.policies import Governed, Policy, PolicyConfig
from openclaw.sim.scenarios import Demand

US: Final = 1_000_000
INF: Final = math.inf
#: Bits of a request's outcome (``RunResult.outcome``).
THROTTLED: Final = 1  #: some attempt was throttled
ADMITTED: Final = 2  #: an attempt was admitted to the backend
FAILED: Final = 4  #: ... and failed there (queue timeout, 5xx)
DROPPED: Final = 8  #: never admitted: retries exhausted, pointless, or never tried (abuse)
#: Seconds of timeline kept after the evaluated span, for retries and queued work.
TAIL_S: Final = 3600

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    max_retries: int = 3
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    jitter: tuple[float, float] = (0.5, 1.5)
    honour_retry_after: bool = True
    max_retry_wait_s: float = 60.0
    #: Start every bucket full at each window boundary (the docstring says why); False
    #: carries bucket state across windows as the service does.
    reset_each_window: bool = True
    backend: BackendConfig = field(default_factory=BackendConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_base_s <= 0 or self.backoff_max_s <= 0:
            raise ValueError("max_retries must be >= 0 and backoff times > 0")
        lo, hi = self.jitter
        if not 0 < lo <= hi:
            raise ValueError("jitter must be (lo, hi) with 0 < lo <= hi")
        interval = self.policy.governor.interval_s
        if interval < 1 or interval != int(interval):
            raise ValueError("the governor's interval must be a whole number of seconds")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A demand made ready for replays: plain lists for the loop, the per-request draws, the
    legitimate segments (needs and the oracle's future)."""

    demand: Demand
    ts: list[int]
    client: list[int]
    legit: list[bool]
    status: list[int]
    service_s: list[float]
    jitter: F64  #: (requests, max_retries)
    legit_segments: Segments  #: legitimate requests by (client, window), evaluated windows
    n_seconds: int


def prepare(demand: Demand, config: ReplayConfig) -> Prepared:
    rng = np.random.default_rng([demand.seed, 1000])
    n = len(demand)
    svc = service_times(config.backend, n, rng, observed_ms=demand.observed_ms)
    lo, hi = config.jitter
    jitter = rng.uniform(lo, hi, size=(n, max(config.max_retries, 1)))
    legit = segment(
        demand.ts_us[demand.legit],
        demand.client[demand.legit],
        window_us=demand.window_us,
        horizon_us=demand.horizon_us,
    )
    return Prepared(
        demand=demand,
        ts=demand.ts_us.tolist(),
        client=demand.client.tolist(),
        legit=demand.legit.tolist(),
        status=demand.status.tolist(),
        service_s=svc.tolist(),
        jitter=jitter,
        legit_segments=legit,
        n_seconds=math.ceil(demand.span_s) + TAIL_S,
    )


@dataclass(frozen=True, slots=True)
class Timeline:
    """Per second of the replay's clock (second 0 starts the evaluated part)."""

    attempts: I64  #: by arrival second
    admitted: I64
    throttled: I64
    abusive_admitted: I64
    done: I64  #: by completion second
    slow: I64  #: completions above the SLO latency
    failed: I64
    p99_ms: F64  #: nearest-rank p99 of the completions (NaN: none)
    violation: npt.NDArray[np.bool_]
    multiplier: F64  #: the governor's multiplier for everyone (1 without a governor)
    multiplier_hot: F64


@dataclass(frozen=True, slots=True)
class RunResult:
    scenario: str
    policy: str
    seed: int
    note: str
    span_s: float
    outcome: npt.NDArray[np.uint8]  #: per request of the demand (bits above)
    legit: npt.NDArray[np.bool_]
    client: I64
    under_allocated: int
    legit_windows: int
    attempts: int
    wall_s: float
    timeline: Timeline
    #: The scenario's injected episode, seconds on the replay's clock (``Demand.episode_s``).
    episode_s: tuple[float, float] | None = None


def _scaled(cap: float, rate: float, m: float) -> tuple[BucketParams, ...]:
    """A bucket under a governor multiplier (``scale_bucket``, as the service scales it)."""
    if cap == INF:
        return ()
    return (BucketParams(*scale_bucket(cap, rate, m)),)


def replay(prepared: Prepared, policy: Policy, config: ReplayConfig) -> RunResult:  # noqa: PLR0912, PLR0915 (one hot loop, kept in one frame for speed)
    """Run one policy over one prepared demand."""
    wall0 = time.perf_counter()
    d = prepared.demand
    win_us = d.window_us
    origin = d.start_us
    names = d.names
    n_clients = len(names)
    ts, cl, lg, svc = prepared.ts, prepared.client, prepared.legit, prepared.service_s
    status_of = prepared.status
    jitter = prepared.jitter
    n = len(ts)

    history = History.of_training(
        names=names,
        window_us=win_us,
        horizon_us=d.horizon_us,
        train=d.train,
        ts_us=d.train_ts_us,
        client=d.train_client,
        status=d.train_status,
        traffic_scale=d.amplify,
    )
    policy.begin(history)

    governed = isinstance(policy, Governed)
    gcfg = config.policy.governor
    gov = GovernorState(gcfg, slo_error_rate=config.backend.slo_error_rate)
    tick_us = round(gcfg.interval_s * US)
    tick_s = int(gcfg.interval_s)
    next_tick = origin + tick_us if governed else 2**62
    m_all = 1.0
    m_hot = 1.0

    backend = Backend(config.backend, d.drops)
    serve = backend.serve
    slo_s = config.backend.slo_p99_ms / 1000.0
    n_sec = prepared.n_seconds
    last_sec = n_sec - 1
    sec_att = [0] * n_sec
    sec_adm = [0] * n_sec
    sec_thr = [0] * n_sec
    sec_abuse = [0] * n_sec
    sec_done = [0] * n_sec
    sec_slow = [0] * n_sec
    sec_fail = [0] * n_sec
    mult_all = [1.0] * n_sec
    mult_hot = [1.0] * n_sec
    lat_s: list[float] = []
    lat_sec: list[int] = []

    max_retries = config.max_retries
    base_s = config.backoff_base_s
    max_s = config.backoff_max_s
    honour = config.honour_retry_after
    max_wait = config.max_retry_wait_s
    rat = refill_and_take
    reset = config.reset_each_window
    clock0 = origin

    legit_seg = prepared.legit_segments
    seg_slices = legit_seg.window_slices()
    assigned_cap = np.full(len(legit_seg), np.inf)
    assigned_rate = np.full(len(legit_seg), np.inf)
    last_window = (d.end_us - 1) // win_us

    outcome = bytearray(n)
    heap: list[tuple[int, int, int]] = []
    a_client: list[int] = []
    a_ts: list[int] = []
    a_status: list[int] = []
    a_lat: list[float] = []
    attempts = 0

    window = origin // win_us
    ws = window * win_us
    next_boundary = ws  # the first event opens the first window
    window -= 1
    caps: list[float] = []
    rates: list[float] = []
    states: dict[int, tuple[tuple[float, float], ...]] = {}
    cache: dict[int, tuple[BucketParams, ...]] = {}
    cache_hot: dict[int, tuple[BucketParams, ...]] = {}
    counts: dict[int, int] = {}
    unlimited: tuple[BucketParams, ...] = ()
    started = False

    i = 0
    while True:
        if heap and (i >= n or heap[0][0] < ts[i]):
            t, rid, k = heapq.heappop(heap)
        elif i < n:
            t = ts[i]
            rid = i
            k = 0
            i += 1
        else:
            break

        while t >= next_boundary:
            # Close the window that ends here (if one was open) and open the next.
            if started:
                history.add(Attempts(window, a_client, a_ts, a_status, a_lat))
                a_client, a_ts, a_status, a_lat = [], [], [], []
            started = True
            window += 1
            ws = window * win_us
            next_boundary = ws + win_us
            alloc = policy.params_for(window, history)
            cap_arr, rate_arr = alloc.dense(n_clients)
            where = seg_slices.get(window)
            if where is not None and window <= last_window:
                seg_clients = legit_seg.client[where]
                assigned_cap[where] = cap_arr[seg_clients]
                assigned_rate[where] = rate_arr[seg_clients]
            caps = cap_arr.tolist()
            rates = rate_arr.tolist()
            if reset:
                states = {}
                clock0 = ws
            cache = {}
            cache_hot = {}
            counts = {}

        if t >= next_tick:
            while t >= next_tick:
                sec = (next_tick - origin) // US
                lo = sec - tick_s
                done = sum(sec_done[lo:sec])
                if gov.observe(done, sum(sec_slow[lo:sec]), sum(sec_fail[lo:sec])):
                    cache = {}
                    cache_hot = {}
                    m_all = gov.m_all
                    m_hot = gov.hot
                if sec < n_sec:
                    mult_all[sec] = m_all
                    mult_hot[sec] = m_hot
                next_tick += tick_us

        c = cl[rid]
        now = (t - clock0) / US
        if governed:
            cnt = counts.get(c, 0) + 1
            counts[c] = cnt
            if cnt > caps[c] + rates[c] * ((t - ws) / US):
                lims = cache_hot.get(c)
                if lims is None:
                    lims = _scaled(caps[c], rates[c], m_hot)
                    cache_hot[c] = lims
            else:
                lims = cache.get(c)
                if lims is None:
                    lims = _scaled(caps[c], rates[c], m_all)
                    cache[c] = lims
        else:
            lims = cache.get(c)
            if lims is None:
                cap = caps[c]
                lims = unlimited if cap == INF else (BucketParams(cap, rates[c]),)
                cache[c] = lims

        tf = (t - origin) / US
        sa = int(tf)
        if sa > last_sec:
            sa = last_sec
        sec_att[sa] += 1
        attempts += 1
        allowed = True
        retry_after = 0.0
        if lims:
            new, dec = rat(states.get(c, ()), lims, now=now, cost=1.0)
            if new is None:
                allowed = False
                retry_after = dec.retry_after
            else:
                states[c] = new

        if allowed:
            latency, ok = serve(tf, svc[rid])
            sd = int(tf + latency)
            if sd > last_sec:
                sd = last_sec
            sec_done[sd] += 1
            if latency > slo_s:
                sec_slow[sd] += 1
            lat_s.append(latency)
            lat_sec.append(sd)
            sec_adm[sa] += 1
            if not lg[rid]:
                sec_abuse[sa] += 1
            if ok:
                outcome[rid] |= ADMITTED
                a_status.append(status_of[rid])
            else:
                sec_fail[sd] += 1
                outcome[rid] |= ADMITTED | FAILED
                a_status.append(503)
            a_lat.append(latency * 1000.0)
        else:
            sec_thr[sa] += 1
            a_status.append(429)
            a_lat.append(math.nan)
            if lg[rid] and k < max_retries and retry_after <= max_wait:
                delay = base_s * 2.0**k
                if delay > max_s:
                    delay = max_s
                delay *= float(jitter[rid, k])
                if honour and retry_after > delay:
                    delay = retry_after
                outcome[rid] |= THROTTLED
                heapq.heappush(heap, (t + max(int(delay * US), 1), rid, k + 1))
            else:
                outcome[rid] |= THROTTLED | DROPPED
        a_client.append(c)
        a_ts.append(t)

    # Under-allocation of the legitimate (client, window) needs.
    finite = np.isfinite(assigned_cap)
    under = 0
    if finite.any():
        need = legit_seg.take(np.flatnonzero(finite)).envelope_at(assigned_rate[finite])
        under = int(np.count_nonzero(need > assigned_cap[finite]))
    in_span = (legit_seg.window * win_us >= origin) & (legit_seg.window <= last_window)

    timeline = _timeline(
        sec_att=sec_att,
        sec_adm=sec_adm,
        sec_thr=sec_thr,
        sec_abuse=sec_abuse,
        sec_done=sec_done,
        sec_slow=sec_slow,
        sec_fail=sec_fail,
        lat_s=lat_s,
        lat_sec=lat_sec,
        mult_all=mult_all,
        mult_hot=mult_hot,
        backend=config.backend,
    )
    return RunResult(
        scenario=d.scenario,
        policy=policy.name,
        seed=d.seed,
        note=d.note,
        span_s=d.span_s,
        outcome=np.frombuffer(bytes(outcome), dtype=np.uint8).copy(),
        legit=d.legit,
        client=d.client,
        under_allocated=under,
        legit_windows=int(np.count_nonzero(in_span)),
        attempts=attempts,
        wall_s=time.perf_counter() - wall0,
        timeline=timeline,
        episode_s=d.episode_s,
    )


def _timeline(
    *,
    sec_att: list[int],
    sec_adm: list[int],
    sec_thr: list[int],
    sec_abuse: list[int],
    sec_done: list[int],
    sec_slow: list[int],
    sec_fail: list[int],
    lat_s: list[float],
    lat_sec: list[int],
    mult_all: list[float],
    mult_hot: list[float],
    backend: BackendConfig,
) -> Timeline:
    n_sec = len(sec_att)
    done = np.array(sec_done, np.int64)
    slow = np.array(sec_slow, np.int64)
    failed = np.array(sec_fail, np.int64)
    secs = np.array(lat_sec, np.int64)
    order = np.argsort(secs, kind="stable")
    offsets = offsets_from_lengths(np.bincount(secs, minlength=n_sec))
    p99_ms = segmented_quantile(np.array(lat_s, np.float64)[order] * 1000.0, offsets, P99)
    rank = (99 * done + 99) // 100
    violation = ((done > 0) & (done - slow < rank)) | (failed > backend.slo_error_rate * done)
    return Timeline(
        attempts=np.array(sec_att, np.int64),
        admitted=np.array(sec_adm, np.int64),
        throttled=np.array(sec_thr, np.int64),
        abusive_admitted=np.array(sec_abuse, np.int64),
        done=done,
        slow=slow,
        failed=failed,
        p99_ms=p99_ms,
        violation=violation,
        multiplier=np.array(mult_all, np.float64),
        multiplier_hot=np.array(mult_hot, np.float64),
    )
