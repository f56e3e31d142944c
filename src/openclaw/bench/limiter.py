"""Decisions per second of the limiter against its peers, all measured in the same run.

Two parts:

* in-process (always): ``MemoryStore.take`` against ``limits`` (fixed and moving window on
  ``MemoryStorage``) and ``pyrate-limiter`` (token bucket and sliding-window log, in memory);
* Redis (``--redis auto`` or ``--redis URL``): ``limits`` fixed window on ``RedisStorage``
  against ``RedisStore`` (blocking, coalesced ``atake``, ``take_many``) and the server's own
  ceiling, ``redis-cli --pipe`` streaming calls of our script.

Machines are shared and noisy, so absolute figures mean little: every round runs every
contender back to back, and the report is the median over rounds of each contender's rate
and of each per-round ratio. A slow patch of the machine then hits both sides of a ratio.

``limits``, ``pyrate_limiter`` and ``redis`` are imported inside the functions that use them:
they load only when a benchmark runs, and the CLI imports this module only then too.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from rich.console import Console
from rich.table import Table
from rich.text import Text

from openclaw.bench import LIMITER_DURATION_S, LIMITER_ROUNDS
from openclaw.errors import ConfigError
from openclaw.limiter import BucketParams, MemoryStore, TakeRequest, memory
from openclaw.limiter.redis import (
    CALL_MAX,
    SCRIPT,
    SCRIPT_SHA,
    RedisStore,
    decode_reply,
    encode_call,
)
from openclaw.settings import Settings
from openclaw.testing.redis import start_redis

#: Distinct client keys, cycled in order: enough that no peer wins by caching one key.
KEYS: Final = 1000
#: Concurrent asyncio tasks calling ``atake``: what a busy async service has in flight.
ASYNC_WORKERS: Final = 256
#: Requests per ``take_many`` call.
BATCH: Final = 256

IN_PROCESS_TARGET: Final = 5.0  # ours / limits FixedWindow
REDIS_LIMITS_TARGET: Final = 3.0  # ours coalesced atake / limits FixedWindow on Redis
REDIS_CEILING_TARGET: Final = 0.3  # ours coalesced atake / the redis-cli --pipe ceiling

OURS: Final = "openclaw MemoryStore.take"
LIMITS_FIXED: Final = "limits FixedWindow"
LIMITS_MOVING: Final = "limits MovingWindow"
PYRATE_TOKEN: Final = "pyrate-limiter TokenBucket"  # noqa: S105 - a name, not a password
PYRATE_LOG: Final = "pyrate-limiter SlidingWindowLog"
R_LIMITS: Final = "limits FixedWindow (Redis)"
R_SYNC: Final = "openclaw RedisStore.take"
R_ASYNC: Final = "openclaw RedisStore.atake"
R_BATCH: Final = "openclaw RedisStore.take_many"
R_CEILING: Final = "redis-cli --pipe ceiling"


# -- result records ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement: decisions made in ``seconds`` of wall time."""

    decisions: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.decisions / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Result:
    """One contender's decisions per second, one figure per round in round order."""

    contender: str
    how: str
    rates: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def low(self) -> float:
        return min(self.rates)

    @property
    def high(self) -> float:
        return max(self.rates)


@dataclass(frozen=True, slots=True)
class Ratio:
    """``contender / baseline``, paired round by round; ``target`` is the minimum to PASS."""

    contender: str
    baseline: str
    values: tuple[float, ...]
    target: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.median >= self.target


@dataclass(frozen=True, slots=True)
class Machine:
    nproc: int
    python: str
    platform: str
    compiled: bool  # the mypyc-built hot path is what ran, not the pure-Python fallback
    versions: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        hot = "compiled (mypyc)" if self.compiled else "pure Python (NOT compiled)"
        return f"nproc={self.nproc}, Python {self.python}, {self.platform}; openclaw hot path {hot}"

    def libraries(self) -> str:
        return ", ".join(f"{name} {version}" for name, version in self.versions)

    def to_json(self) -> dict[str, Any]:
        """The machine as every benchmark's ``--json`` file records it."""
        return {
            "nproc": self.nproc,
            "python": self.python,
            "platform": self.platform,
            "compiled": self.compiled,
            "versions": dict(self.versions),
        }


@dataclass(frozen=True, slots=True)
class TableReport:
    title: str
    workload: str
    results: tuple[Result, ...]
    ratios: tuple[Ratio, ...]
    notes: tuple[str, ...] = ()

    def ratio(self, contender: str, baseline: str) -> Ratio | None:
        for ratio in self.ratios:
            if ratio.contender == contender and ratio.baseline == baseline:
                return ratio
        return None

    @property
    def baselines(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.baseline for r in self.ratios))


@dataclass(frozen=True, slots=True)
class Report:
    command: str
    machine: Machine
    duration_s: float
    rounds: int
    redis: str
    tables: tuple[TableReport, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "machine": self.machine.to_json(),
            "duration_s": self.duration_s,
            "rounds": self.rounds,
            "redis": self.redis,
            "tables": [
                {
                    "title": t.title,
                    "workload": t.workload,
                    "notes": list(t.notes),
                    "results": [
                        {
                            "contender": r.contender,
                            "how": r.how,
                            "median": r.median,
                            "min": r.low,
                            "max": r.high,
                            "rounds": list(r.rates),
                        }
                        for r in t.results
                    ],
                    "ratios": [
                        {
                            "contender": q.contender,
                            "baseline": q.baseline,
                            "median": q.median,
                            "min": q.low,
                            "max": q.high,
                            "rounds": list(q.values),
                            "target": q.target,
                            "passed": q.passed,
                        }
                        for q in t.ratios
                    ],
                }
                for t in self.tables
            ],
        }


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float = LIMITER_DURATION_S
    rounds: int = LIMITER_ROUNDS
    redis: str = "none"  # "none", "auto" or a redis:// URL
    json_path: Path | None = None
    keys: int = KEYS


# -- measuring ----------------------------------------------------------------------------

#: Does one unit of work (a pass over the keys, or one batch) and returns its decisions.
Step = Callable[[], int]


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    how: str
    #: Runs for about the given seconds and returns what it did.
    run: Callable[[float], Sample]
    #: Run once before the rounds: creates the buckets, fills connection pools, and fails
    #: loudly if the contender does not decide the way the workload says it should.
    warm_up: Callable[[], None] = field(default=lambda: None)


def timed(step: Step, duration: float) -> Sample:
    """Repeat ``step`` until ``duration`` has passed. The clock is read once per step (a
    whole pass over the keys), so its cost is the same negligible share for every peer."""
    gc.collect()  # garbage left by the previous contender is not this one's to collect
    decisions = 0
    start = time.perf_counter()
    deadline = start + duration
    while True:
        decisions += step()
        now = time.perf_counter()
        if now >= deadline:
            return Sample(decisions, now - start)


def rotation(count: int, rounds: int) -> Iterator[tuple[int, int]]:
    """``(round, index)`` for ``rounds`` rounds over ``count`` contenders, the first one
    rotating from round to round so none always runs right after the same other."""
    for r in range(rounds):
        for i in range(count):
            yield r, (r + i) % count


def run_rounds(
    contenders: Sequence[Contender],
    rounds: int,
    duration: float,
    progress: Callable[[str], None],
) -> tuple[Result, ...]:
    """Every round runs every contender; the starting contender rotates from round to round
    so none is always the one that runs right after (say) a peer's cleanup thread."""
    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    for contender in contenders:
        progress(f"warming up {contender.name}")
        contender.warm_up()
    for r, i in rotation(len(contenders), rounds):
        contender = contenders[i]
        progress(f"round {r + 1}/{rounds}: {contender.name}")
        rates[contender.name].append(contender.run(duration).rate)
    return tuple(Result(c.name, c.how, tuple(rates[c.name])) for c in contenders)


def paired(
    results: Sequence[Result], contender: str, baseline: str, target: float | None = None
) -> Ratio:
    by_name = {r.contender: r for r in results}
    top, bottom = by_name[contender].rates, by_name[baseline].rates
    values = tuple(a / b if b > 0 else 0.0 for a, b in zip(top, bottom, strict=True))
    return Ratio(contender, baseline, values, target)


def expect(name: str, outcomes: Sequence[bool], allowed: bool) -> None:
    """A peer configured wrongly (denying what should pass, or the reverse) would make any
    ratio meaningless; refuse to report it."""
    wrong = sum(1 for o in outcomes if o != allowed)
    if wrong:
        want = "allowed" if allowed else "denied"
        raise RuntimeError(f"{name}: {wrong} of {len(outcomes)} decisions were not {want}")


# -- in-process -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    label: str
    capacity: int  # requests per window (a bucket of this many tokens)
    window_s: int  # refilled over this many seconds
    allowed: bool  # what every measured decision must be
    fill_passes: int  # passes over the keys before measuring, to reach the steady state


ALLOWED: Final = Workload(
    "allowed",
    "every request allowed: 1e9 per second per key, keys cycled in order",
    10**9,
    1,
    allowed=True,
    fill_passes=1,
)
DENIED: Final = Workload(
    "denied",
    "every request denied: 10 per hour per key, spent before measuring",
    10,
    3600,
    allowed=False,
    fill_passes=11,
)


def _in_process_contenders(keys: list[str], w: Workload) -> tuple[list[Contender], ExitStack]:
    """The five in-process peers on one workload. Every step is the same loop,
    ``for key in keys: <one library call>``, with the call's function bound to a local
    first, so loop overhead is equal and as small as Python allows."""
    import limits
    import pyrate_limiter as pyrate

    cleanup = ExitStack()
    n = len(keys)

    def contender(name: str, how: str, step: Step, decide: Callable[[str], bool]) -> Contender:
        def warm_up() -> None:
            for _ in range(w.fill_passes):
                step()
            expect(name, [decide(k) for k in keys], w.allowed)

        return Contender(name, how, lambda d: timed(step, d), warm_up)

    # ours
    store = MemoryStore()
    params = BucketParams(capacity=w.capacity, refill_rate=w.capacity / w.window_s)

    def ours() -> int:
        take = store.take
        for key in keys:
            take(key, params)
        return n

    # limits
    item = limits.RateLimitItemPerSecond(w.capacity, w.window_s)
    fixed = limits.strategies.FixedWindowRateLimiter(limits.storage.MemoryStorage())
    moving = limits.strategies.MovingWindowRateLimiter(limits.storage.MemoryStorage())

    def limits_fixed() -> int:
        hit = fixed.hit
        for key in keys:
            hit(item, key)
        return n

    def limits_moving() -> int:
        hit = moving.hit
        for key in keys:
            hit(item, key)
        return n

    # pyrate-limiter: a Limiter routes every name to one bucket unless its factory makes
    # one bucket per name, which is what per-client limiting needs.
    rate = pyrate.Rate(w.capacity, w.window_s * 1000)
    clock = pyrate.MonotonicClock()

    class PerKey(pyrate.BucketFactory):
        def __init__(self, make: Callable[[], Any], *, leak: bool) -> None:
            self.make = make
            self.leak = leak
            self.buckets: dict[str, Any] = {}
            # The log buckets keep one entry per request until leaked; leak them as often
            # as the window turns over so memory stays bounded over a long run.
            self.leak_interval = 1000

        def wrap_item(self, name: str, weight: int = 1) -> Any:
            return pyrate.RateItem(name, clock.now(), weight=weight)

        def get(self, item: Any) -> Any:
            bucket = self.buckets.get(item.name)
            if bucket is None:
                bucket = self.make()
                if self.leak:
                    self.schedule_leak(bucket)
                self.buckets[item.name] = bucket
            return bucket

    token = pyrate.Limiter(
        PerKey(lambda: pyrate.StateBucket([rate], algorithm=pyrate.TokenBucket()), leak=False)
    )
    log = pyrate.Limiter(PerKey(lambda: pyrate.InMemoryBucket([rate]), leak=True))
    cleanup.callback(token.close)
    cleanup.callback(log.close)

    def pyrate_token() -> int:
        acquire = token.try_acquire
        for key in keys:
            acquire(key, 1, False)
        return n

    def pyrate_log() -> int:
        acquire = log.try_acquire
        for key in keys:
            acquire(key, 1, False)
        return n

    contenders = [
        contender(
            OURS,
            "token bucket, one BucketParams",
            ours,
            lambda k: store.take(k, params).allowed,
        ),
        contender(
            LIMITS_FIXED,
            "limits FixedWindowRateLimiter.hit on MemoryStorage",
            limits_fixed,
            lambda k: bool(fixed.hit(item, k)),
        ),
        contender(
            LIMITS_MOVING,
            "limits MovingWindowRateLimiter.hit on MemoryStorage",
            limits_moving,
            lambda k: bool(moving.hit(item, k)),
        ),
        contender(
            PYRATE_TOKEN,
            "Limiter.try_acquire(blocking=False), StateBucket per key",
            pyrate_token,
            lambda k: token.try_acquire(k, 1, False) is True,
        ),
        contender(
            PYRATE_LOG,
            "Limiter.try_acquire(blocking=False), InMemoryBucket per key",
            pyrate_log,
            lambda k: log.try_acquire(k, 1, False) is True,
        ),
    ]
    return contenders, cleanup


def in_process(
    options: Options, workload: Workload, progress: Callable[[str], None]
) -> TableReport:
    keys = [f"openclaw-bench-{i}" for i in range(options.keys)]
    contenders, cleanup = _in_process_contenders(keys, workload)
    with cleanup:
        results = run_rounds(
            contenders,
            options.rounds,
            options.duration_s,
            lambda s: progress(f"in-process ({workload.name}): {s}"),
        )
    ratios = tuple(
        paired(
            results, r.contender, LIMITS_FIXED, IN_PROCESS_TARGET if r.contender == OURS else None
        )
        for r in results
    )
    return TableReport(
        title=f"In-process decisions/s, workload '{workload.name}'",
        workload=f"{workload.label}; {options.keys} keys",
        results=results,
        ratios=ratios,
        notes=(
            "one thread, one decision per call; 'x limits FixedWindow' is the median of the "
            "per-round ratios (each round runs every contender back to back)",
        ),
    )


# -- Redis --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisTarget:
    url: str
    where: str  # for the report: never the URL, which may carry a password
    version: str


def _redis_cli_args(url: str) -> list[str] | None:
    """Connection arguments for redis-cli, or None for a TLS URL (redis-cli would need the
    certificates our client finds on its own)."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        return None
    args = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    if parts.password:
        args += ["--no-auth-warning", "-a", unquote(parts.password)]
        if parts.username:
            args += ["--user", unquote(parts.username)]
    db = parts.path.strip("/")
    if db and db != "0":
        args += ["-n", db]
    return args


class Ceiling:
    """The server alone: ``redis-cli --pipe`` streaming calls of our script, one decision per
    ``EVALSHA``, so no Python client sits in the way. (redis-benchmark, the obvious tool, cuts
    an argument at its first NUL byte, and the script's numbers are binary doubles.)"""

    def __init__(self, binary: str, conn: list[str], commands: list[bytes]) -> None:
        self._binary = binary
        self._conn = conn
        self._commands = commands  # one packed EVALSHA per key, sent in turn
        self._rps = 50_000.0  # replaced by the first measurement
        self._startup = 0.0  # redis-cli's own start and connect, taken off every run

    def _pipe(self, n: int) -> float:
        commands = self._commands
        data = b"".join(commands[i % len(commands)] for i in range(n))
        cmd = [self._binary, *self._conn, "--pipe"]
        start = time.perf_counter()
        proc = subprocess.run(  # noqa: S603 - our argv, not a shell line
            cmd, check=False, capture_output=True, input=data, timeout=60 + n / 1000
        )
        seconds = time.perf_counter() - start
        output = (proc.stdout + proc.stderr).decode(errors="replace")
        # A rate of error replies is no ceiling.
        if proc.returncode != 0 or f"errors: 0, replies: {n}" not in output:
            raise RuntimeError(f"redis-cli --pipe failed ({proc.returncode}): {output.strip()}")
        return seconds

    def calibrate(self) -> None:
        self._startup = min(self._pipe(1) for _ in range(3))
        self.run(0.05)  # sizes the first measured run

    def run(self, duration: float) -> Sample:
        # Sized from the last rate to last about ``duration``.
        n = max(int(self._rps * duration), 1000)
        seconds = max(self._pipe(n) - self._startup, 1e-6)
        self._rps = n / seconds
        return Sample(n, seconds)


#: The Redis workload: every request allowed, as in the in-process 'allowed' workload.
REDIS_CAPACITY: Final = 10**9


def _redis_contenders(
    url: str, keys: list[str], runner: asyncio.Runner, cleanup: ExitStack, notes: list[str]
) -> list[Contender]:
    params = BucketParams(capacity=REDIS_CAPACITY, refill_rate=float(REDIS_CAPACITY))
    settings = Settings()  # production defaults: the 50 ms timeout is part of the figure
    store = RedisStore(url, settings=settings)
    cleanup.callback(lambda: runner.run(store.aclose()))
    contenders = [_limits_redis(url, keys), *_ours_redis(store, keys, params, runner, notes)]
    ceiling = _ceiling(
        url, keys, params, prefix=settings.redis_key_prefix, cleanup=cleanup, notes=notes
    )
    if ceiling is not None:
        contenders.append(ceiling)
    return contenders


def _limits_redis(url: str, keys: list[str]) -> Contender:
    import limits

    n = len(keys)
    item = limits.RateLimitItemPerSecond(REDIS_CAPACITY, 1)
    fixed = limits.strategies.FixedWindowRateLimiter(limits.storage.storage_from_string(url))

    def step() -> int:
        hit = fixed.hit
        for key in keys:
            hit(item, key)
        return n

    return Contender(
        R_LIMITS,
        "limits FixedWindowRateLimiter.hit on RedisStorage, one round trip each",
        lambda d: timed(step, d),
        lambda: expect(R_LIMITS, [bool(fixed.hit(item, k)) for k in keys], allowed=True),
    )


def _ours_redis(
    store: RedisStore,
    keys: list[str],
    params: BucketParams,
    runner: asyncio.Runner,
    notes: list[str],
) -> list[Contender]:
    n = len(keys)

    def counted(work: Callable[[], Sample]) -> Sample:
        # A round trip past the timeout is decided by failure_mode without Redis, and fast:
        # such decisions are not Redis decisions, so they are left out of the count.
        before = store.fallback_decisions
        sample = work()
        fell_back = store.fallback_decisions - before
        if fell_back:
            notes.append(
                f"{fell_back} openclaw decisions fell back to failure_mode "
                f"({store.last_error}); left out of the counts"
            )
        return Sample(sample.decisions - fell_back, sample.seconds)

    def check(name: str, outcomes: Sequence[bool]) -> None:
        expect(name, outcomes, allowed=True)
        if store.fallback_decisions:
            raise RuntimeError(f"{name}: Redis did not answer in time ({store.last_error})")

    # blocking: one round trip per decision
    def sync_step() -> int:
        take = store.take
        for key in keys:
            take(key, params)
        return n

    # take_many: the key stream cut into batches; enough batches that the cycle of batches
    # is also a whole number of cycles of keys
    stream = itertools.cycle(keys)
    batches = [[next(stream) for _ in range(BATCH)] for _ in range(math.lcm(n, BATCH) // BATCH)]
    next_batch: Iterator[list[str]] = itertools.cycle(batches)

    def batch_step() -> int:
        of = TakeRequest.of
        store.take_many([of(key, params) for key in next(next_batch)])
        return BATCH

    # asyncio: many tasks each awaiting atake, coalesced by the store
    async def workers(duration: float) -> Sample:
        atake = store.atake
        perf = time.perf_counter
        start = perf()
        deadline = start + duration

        async def worker(first: int) -> int:
            done = 0
            i = first
            while perf() < deadline:
                await atake(keys[i], params)
                done += 1
                i = (i + ASYNC_WORKERS) % n
            return done

        counts = await asyncio.gather(*(worker(w % n) for w in range(ASYNC_WORKERS)))
        return Sample(sum(counts), perf() - start)

    def run_async(duration: float) -> Sample:
        gc.collect()
        return runner.run(workers(duration))

    async def probe_async() -> list[bool]:
        decisions = await asyncio.gather(*(store.atake(k, params) for k in keys))
        return [d.allowed for d in decisions]

    def probe_batch() -> list[bool]:
        return [d.allowed for d in store.take_many([TakeRequest.of(k, params) for k in keys])]

    return [
        Contender(
            R_SYNC,
            "blocking take, one EVALSHA round trip per decision",
            lambda d: counted(lambda: timed(sync_step, d)),
            lambda: check(R_SYNC, [store.take(k, params).allowed for k in keys]),
        ),
        Contender(
            R_ASYNC,
            f"{ASYNC_WORKERS} asyncio tasks looping on atake; coalesced into pipelines of "
            f"EVALSHA calls of up to {CALL_MAX} decisions",
            lambda d: counted(lambda: run_async(d)),
            lambda: check(R_ASYNC, runner.run(probe_async())),
        ),
        Contender(
            R_BATCH,
            f"take_many of {BATCH} requests: one pipeline of EVALSHA calls of up to "
            f"{CALL_MAX} decisions",
            lambda d: counted(lambda: timed(batch_step, d)),
            lambda: check(R_BATCH, probe_batch()),
        ),
    ]


def _ceiling(
    url: str,
    keys: list[str],
    params: BucketParams,
    *,
    prefix: str,
    cleanup: ExitStack,
    notes: list[str],
) -> Contender | None:
    """redis-cli --pipe on our script, or None (with a note saying why) when it cannot run."""
    import redis
    from redis.asyncio.connection import Connection

    binary = shutil.which("redis-cli")
    conn = _redis_cli_args(url)
    if binary is None:
        notes.append("redis-cli is not on PATH (Debian: redis-tools): no ceiling")
        return None
    if conn is None:
        notes.append("redis-cli --pipe cannot reach a rediss:// (TLS) URL here: no ceiling")
        return None
    client = redis.Redis.from_url(url, socket_timeout=5)
    cleanup.callback(client.close)
    # Exactly what RedisStore sends for one request (Redis TIME, cost 1, one limit), for
    # each key in turn.
    calls = [encode_call([TakeRequest.of(key, params)], prefix, None) for key in keys]
    packer = Connection()  # packs commands as the client would send them, never connects
    commands = [b"".join(packer.pack_command("EVALSHA", SCRIPT_SHA, *call)) for call in calls]
    ceiling = Ceiling(binary, conn, commands)

    def warm_up() -> None:
        # redis-cli never loads a script: an unloaded one would be all NOSCRIPT errors.
        loaded = client.script_load(SCRIPT)
        if loaded != SCRIPT_SHA:
            raise RuntimeError(f"SCRIPT LOAD returned {loaded}, expected {SCRIPT_SHA}")
        reply = client.evalsha(SCRIPT_SHA, *calls[0])
        if not (isinstance(reply, bytes) and [d.allowed for d in decode_reply(reply)] == [True]):
            raise RuntimeError(f"the ceiling's EVALSHA does not allow: {reply!r}")
        ceiling.calibrate()

    return Contender(
        R_CEILING,
        f"redis-cli --pipe of EVALSHA calls of our script, ONE decision per call, over the "
        f"{len(keys)} keys in turn",
        ceiling.run,
        warm_up,
    )


def redis_server_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        info: dict[str, Any] = client.info("server")
    finally:
        client.close()
    return str(info.get("redis_version", "?"))


def redis_target(option: str, stack: ExitStack) -> RedisTarget | None:
    """What ``--redis`` names, reachable, or a ConfigError before any measuring starts."""
    if option == "none":
        return None
    if option == "auto":
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="openclaw-bench-"))
        server = start_redis(Path(workdir))
        stack.callback(server.stop)
        return RedisTarget(
            server.url, f"throwaway on 127.0.0.1:{server.port}", redis_server_version(server.url)
        )
    scheme = option.partition("://")[0]
    # The schemes all three clients (ours, limits, redis-py) read the same way.
    if scheme not in ("redis", "rediss") or "://" not in option:
        raise ConfigError(
            f"--redis takes none, auto, or a redis:// or rediss:// URL, not {scheme or option!r}"
        )
    where = f"given server at {urlsplit(option).hostname}"
    try:
        version = redis_server_version(option)
    except Exception as exc:
        raise ConfigError(f"cannot reach the {where}: {type(exc).__name__}: {exc}") from exc
    return RedisTarget(option, where, version)


def redis_part(
    target: RedisTarget, options: Options, progress: Callable[[str], None]
) -> TableReport:
    url = target.url
    keys = [f"openclaw-bench-{i}" for i in range(options.keys)]
    notes: list[str] = [
        f"redis-server {target.version}, {target.where}; client and server share the machine",
    ]
    with asyncio.Runner() as runner, ExitStack() as cleanup:
        contenders = _redis_contenders(url, keys, runner, cleanup, notes)
        results = run_rounds(
            contenders,
            options.rounds,
            options.duration_s,
            lambda s: progress(f"redis: {s}"),
        )
    names = {r.contender for r in results}
    ratios = [
        paired(
            results, r.contender, R_LIMITS, REDIS_LIMITS_TARGET if r.contender == R_ASYNC else None
        )
        for r in results
    ]
    if R_CEILING in names:
        ratios += [
            paired(
                results,
                r.contender,
                R_CEILING,
                REDIS_CEILING_TARGET if r.contender == R_ASYNC else None,
            )
            for r in results
        ]
        notes.append(
            f"ours carries up to {CALL_MAX} decisions per script call; the ceiling is ONE "
            "decision per EVALSHA (as the ceiling always was: a server's rate on single-decision "
            "calls)"
        )
    return TableReport(
        title="Redis decisions/s, one Python process",
        workload=f"every request allowed: 1e9 per second per key; {options.keys} keys",
        results=results,
        ratios=tuple(ratios),
        notes=tuple(notes),
    )


# -- report -------------------------------------------------------------------------------


def machine() -> Machine:
    versions: list[tuple[str, str]] = []
    for dist in ("limits", "pyrate-limiter", "redis", "hiredis"):
        try:
            versions.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            versions.append((dist, "not installed"))
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        nproc = os.cpu_count() or 1
    return Machine(
        nproc=nproc,
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        platform=platform.platform(terse=True),
        compiled=not (memory.__file__ or "").endswith(".py"),
        versions=tuple(versions),
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command_line(argv: Sequence[str]) -> str:
    """The command as typed: ``openclaw ...`` for the entry point, ``python <script> ...``
    for ``bench/limiter.py``."""
    prog = argv[0] if argv else "openclaw"
    if prog.endswith(".py"):
        return shlex.join(["python", prog, *argv[1:]])
    return shlex.join(["openclaw", *argv[1:]])


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def verdict(ok: bool, text: str) -> Text:
    """``text: PASS`` in green or ``text: FAIL`` in red."""
    return Text(f"{text}: {'PASS' if ok else 'FAIL'}", style="bold green" if ok else "bold red")


def _verdict(ratio: Ratio) -> Text:
    if ratio.target is None:
        return Text("")
    return verdict(bool(ratio.passed), f"target >= {ratio.target:g}x")


def print_line(console: Console, text: str, style: str = "") -> None:
    # Commands and versions are literal text: no rich markup, no number highlighting.
    console.print(text, style=style, highlight=False, markup=False, soft_wrap=True)


def report_console(console: Console | None) -> Console:
    """The console given, or stdout's: piped output would otherwise wrap tables at 80 columns."""
    if console is not None:
        return console
    return Console() if sys.stdout.isatty() else Console(width=160)


def write_json(path: Path | None, payload: Any, console: Console) -> None:
    """The results as indented JSON at ``path`` (if given), and a line saying so."""
    if path is None:
        return
    path.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"results written to {path}", highlight=False)


def render(console: Console, report: Report, table: TableReport) -> None:
    console.print()
    print_line(console, f"$ {report.command}", "bold")
    print_line(console, f"machine: {report.machine.describe()}")
    print_line(console, f"libraries: {report.machine.libraries()}")
    print_line(console, f"workload: {table.workload}")
    print_line(
        console,
        f"rounds: {report.rounds}, each running every contender for {report.duration_s:g} s",
    )
    grid = Table(title=table.title, title_justify="left", show_lines=True)
    grid.add_column("contender", min_width=34, max_width=60)
    grid.add_column("decisions/s\n(median)", justify="right", no_wrap=True)
    grid.add_column("spread\n(min - max)", justify="right", no_wrap=True)
    for baseline in table.baselines:
        # The ratio, its spread over rounds, and the target when there is one, in one
        # cell: a separate target column per baseline made the table too wide to read.
        grid.add_column(f"x {baseline}\n(min - max)", justify="right", no_wrap=True)
    for result in table.results:
        cells: list[Text | str] = [
            Text.assemble((result.contender, "bold"), "\n", (result.how, "dim")),
            _rate(result.median),
            f"{_rate(result.low)} - {_rate(result.high)}",
        ]
        for baseline in table.baselines:
            ratio = table.ratio(result.contender, baseline)
            if ratio is None:
                cells.append("")
                continue
            cell = Text(f"{ratio.median:.2f}x\n({ratio.low:.2f} - {ratio.high:.2f})")
            if ratio.target is not None:
                cell.append("\n")
                cell.append_text(_verdict(ratio))
            cells.append(cell)
        grid.add_row(*cells)
    console.print(grid)
    for note in table.notes:
        print_line(console, f"  note: {note}", "dim")
    for ratio in table.ratios:
        if ratio.target is not None:
            console.print(
                Text.assemble(
                    f"  {ratio.contender} / {ratio.baseline} = {ratio.median:.2f}x ",
                    _verdict(ratio),
                )
            )


def run(options: Options, *, command: str, console: Console | None = None) -> Report:
    """Run every part the options ask for, print each table as it completes, and return the
    report. Targets that fail are printed as FAIL; they do not raise."""
    console = report_console(console)
    status_console = Console(stderr=True)
    report = Report(
        command=command,
        machine=machine(),
        duration_s=options.duration_s,
        rounds=options.rounds,
        redis=options.redis,
        tables=(),
    )
    tables: list[TableReport] = []
    with ExitStack() as stack:
        # Before the in-process part, so a wrong --redis fails in a second, not after it.
        target = redis_target(options.redis, stack)
        status = stack.enter_context(status_console.status("starting"))

        def progress(message: str) -> None:
            status.update(message)

        for workload in (ALLOWED, DENIED):
            table = in_process(options, workload, progress)
            tables.append(table)
            status.stop()
            render(console, report, table)
            status.start()
        if target is not None:
            table = redis_part(target, options, progress)
            tables.append(table)
            status.stop()
            render(console, report, table)
    report = replace(report, tables=tuple(tables))
    write_json(options.json_path, report.to_json(), console)
    return report
