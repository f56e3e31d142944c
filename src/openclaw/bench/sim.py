"""Replay speed: simulated requests per second of wall time, against the bare engine.

The workload: one (scenario, seed) demand of a trace (by default the NASA day with the
distributed attack, amplified as ``openclaw simulate`` does), built and prepared once.
Contenders, every round running each once, the first one rotating (``rotation``), the median
over rounds reported:

* **peer: bare engine loop**: the demand's first attempts in time order through
  ``openclaw.limiter.core.refill_and_take`` in a plain loop: one state dict, the best static
  bucket for everyone, buckets full again at each window boundary, as the replay's. No
  backend, no policy, no retries, no timeline: the floor any replay through the real engine
  pays per decision.
* **replay <policy>**: ``openclaw.sim.replay.replay`` with that policy (the same demand):
  requests are attempts, retries included, as ``openclaw simulate`` counts them.

Target: a million simulated requests per minute (16,667 per second) for every replay.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from rich.console import Console
from rich.table import Table

from openclaw.bench.limiter import machine as host
from openclaw.bench.limiter import print_line, report_console, rotation, verdict, write_json
from openclaw.limiter.core import BucketParams, BucketState, refill_and_take
from openclaw.settings import Settings
from openclaw.sim.policies import PolicyBuilder, PolicySpec, fit_static, resolve_policy
from openclaw.sim.replay import Prepared, ReplayConfig, prepare, replay
from openclaw.sim.run import sim_config
from openclaw.sim.scenarios import SCENARIOS, build_demand, calibrate
from openclaw.sim.trace import load_trace
from openclaw.telemetry.parsers import Format

TARGET_PER_MIN: Final = 1_000_000
PEER: Final = "peer: bare engine loop"
DEFAULT_POLICIES: Final = ("none", "static", "static+gov", "percentile+gov", "oracle")
US: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Options:
    trace: Path = Path("../shared/data/traces/nasa_19950801.tsv")
    fmt: Format = "nasa-tsv"
    scenario: str = "distributed"
    seed: int = 0
    policies: tuple[str, ...] = DEFAULT_POLICIES
    rounds: int = 3
    amplify: int | None = None
    json_path: Path | None = None


@dataclass(frozen=True, slots=True)
class Measured:
    """One contender: simulated requests (attempts) and seconds, per round."""

    name: str
    requests: tuple[int, ...]
    seconds: tuple[float, ...]

    @property
    def rates(self) -> tuple[float, ...]:
        return tuple(n / s for n, s in zip(self.requests, self.seconds, strict=True))

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def bare_engine(prepared: Prepared, params: BucketParams) -> tuple[int, float]:
    """The peer: every first attempt through the engine, nothing else. (decisions, seconds)"""
    d = prepared.demand
    ts, cl = prepared.ts, prepared.client
    win = d.window_us
    rat = refill_and_take
    lims = (params,)
    gc.collect()
    start = time.perf_counter()
    states: dict[int, tuple[BucketState, ...]] = {}
    ws = ts[0] // win * win if ts else 0
    boundary = ws + win
    for t, c in zip(ts, cl, strict=True):
        if t >= boundary:
            ws = t // win * win
            boundary = ws + win
            states = {}
        new, _ = rat(states.get(c, ()), lims, now=(t - ws) / US, cost=1.0)
        if new is not None:
            states[c] = new
    return len(ts), time.perf_counter() - start


def _replayer(
    prepared: Prepared, config: ReplayConfig, build: PolicyBuilder
) -> Callable[[], tuple[int, float]]:
    def measure() -> tuple[int, float]:
        policy = build(config.policy, prepared.legit_segments)
        gc.collect()
        result = replay(prepared, policy, config)
        return result.attempts, result.wall_s

    return measure


def _contenders(
    prepared: Prepared, config: ReplayConfig, policies: Sequence[PolicySpec], params: BucketParams
) -> list[tuple[str, Callable[[], tuple[int, float]]]]:
    out: list[tuple[str, Callable[[], tuple[int, float]]]] = [
        (PEER, lambda: bare_engine(prepared, params))
    ]
    for spec in policies:
        out.append((f"replay {spec.name}", _replayer(prepared, config, spec.build)))
    return out


def render(console: Console, results: Sequence[Measured], *, header: Sequence[str]) -> bool:
    """The table; True when every replay met the target."""
    peer = results[0]
    target = TARGET_PER_MIN / 60.0
    console.print()
    for k, line in enumerate(header):
        print_line(console, line, "bold" if k == 0 else "")
    table = Table(show_lines=False)
    for heading in (
        "contender",
        "requests/run",
        "seconds",
        "requests/s",
        "spread",
        "million/min",
        "x peer time",
        "target",
    ):
        table.add_column(heading, justify="left" if heading in ("contender", "target") else "right")
    peer_per_request = statistics.median(peer.seconds) / max(statistics.median(peer.requests), 1)
    for res in results:
        rate = res.median
        secs = statistics.median(res.seconds)
        per_request = secs / max(statistics.median(res.requests), 1)
        table.add_row(
            res.name,
            f"{statistics.median(res.requests):,.0f}",
            f"{secs:.2f}",
            f"{rate:,.0f}",
            f"{min(res.rates):,.0f} - {max(res.rates):,.0f}",
            f"{rate * 60 / 1e6:.1f}",
            f"{per_request / peer_per_request:.1f}",
            verdict(rate >= target, f">= {TARGET_PER_MIN / 1e6:g} M/min")
            if res is not peer
            else "",
        )
    console.print(table)
    print_line(
        console,
        "x peer time: seconds per simulated request against the bare engine's per decision",
        "dim",
    )
    worst = min(results[1:], key=lambda r: r.median) if len(results) > 1 else peer
    passed = worst.median >= target
    console.print(
        verdict(
            passed,
            f"target: every replay >= {TARGET_PER_MIN:,} simulated requests per minute; "
            f"slowest {worst.name} at {worst.median * 60:,.0f}/min",
        )
    )
    return passed


def run(options: Options, *, command: str, console: Console | None = None) -> dict[str, Any]:
    """Measure, print the table, and return (and write, with ``json_path``) the figures.
    A missed target prints FAIL; it does not raise."""
    console = report_console(console)
    status = Console(stderr=True)
    specs = [resolve_policy(name) for name in options.policies]  # a wrong name fails first
    if options.scenario not in SCENARIOS:
        raise ValueError(
            f"unknown scenario {options.scenario!r}: use one of {', '.join(SCENARIOS)}"
        )
    settings = Settings()
    config = sim_config(settings, amplify=options.amplify)
    with status.status(f"loading {options.trace}"):
        t0 = time.perf_counter()
        trace = load_trace(options.trace, options.fmt)
        load_s = time.perf_counter() - t0
    with status.status(f"building the {options.scenario} demand"):
        t0 = time.perf_counter()
        calibration = calibrate(
            trace,
            window_s=config.window_s,
            train_fraction=config.train_fraction,
            amplify=config.amplify,
            backend=config.replay.backend,
        )
        replay_config = ReplayConfig(backend=calibration.backend, policy=config.replay.policy)
        demand = build_demand(
            trace,
            options.scenario,
            options.seed,
            window_s=config.window_s,
            horizon_s=config.horizon_s,
            train_fraction=config.train_fraction,
            calibration=calibration,
        )
        prepared = prepare(demand, replay_config)
        setup_s = time.perf_counter() - t0
    pc = replay_config.policy
    lo, hi, m = pc.static_rate_grid
    fit = fit_static(
        demand.train,
        budget=pc.static_budget,
        rates=np.geomspace(lo, hi, m),
        window_s=config.window_s,
    )
    params = BucketParams(fit.capacity, fit.refill_rate)
    contenders = _contenders(prepared, replay_config, specs, params)
    requests: dict[str, list[int]] = {name: [] for name, _ in contenders}
    seconds: dict[str, list[float]] = {name: [] for name, _ in contenders}
    with status.status("measuring") as bar:
        for r, i in rotation(len(contenders), options.rounds):
            name, measure = contenders[i]
            bar.update(f"round {r + 1}/{options.rounds}: {name}")
            n, s = measure()
            requests[name].append(n)
            seconds[name].append(s)
    results = [
        Measured(name, tuple(requests[name]), tuple(seconds[name])) for name, _ in contenders
    ]
    machine = host().describe()

    passed = render(
        console,
        results,
        header=(
            f"$ {command}",
            f"machine: {machine}",
            f"workload: {trace.source} ({len(trace):,} requests), scenario {options.scenario}, "
            f"seed {options.seed}: {demand.note}; {calibration.describe()}; "
            f"{len(demand):,} first attempts over {demand.span_s / 3600:.1f} h simulated",
            f"setup (once): trace read in {load_s:.2f} s, demand built and prepared in "
            f"{setup_s:.2f} s; peer bucket: the static fit, b={fit.capacity:g}, "
            f"r={fit.refill_rate:.4g}/s",
            f"rounds: {options.rounds}, the median reported",
        ),
    )
    payload: dict[str, Any] = {
        "command": command,
        "machine": machine,
        "trace": trace.source,
        "scenario": options.scenario,
        "seed": options.seed,
        "first_attempts": len(demand),
        "amplify": calibration.amplify,
        "setup_s": {"load": load_s, "demand_and_prepare": setup_s},
        "rounds": options.rounds,
        "contenders": [
            {
                "name": r.name,
                "requests": list(r.requests),
                "seconds": list(r.seconds),
                "requests_per_s": r.median,
                "million_per_min": r.median * 60 / 1e6,
            }
            for r in results
        ],
        "target_per_min": TARGET_PER_MIN,
        "verdict": "PASS" if passed else "FAIL",
    }
    write_json(options.json_path, payload, console)
    return payload
