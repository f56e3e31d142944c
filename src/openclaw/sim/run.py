"""Runs of scenarios x policies x seeds, and their table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from rich.table import Table

from openclaw.sim.metrics import CORE, RunMetrics, Summary, format_value, run_metrics, summarize
from openclaw.sim.policies import DEFAULT_POLICIES, check_policy_names, make_policy
from openclaw.sim.replay import ReplayConfig, RunResult, prepare, replay
from openclaw.sim.scenarios import (
    SCENARIOS,
    Calibration,
    ScenarioConfig,
    build_demand,
    calibrate,
)
from openclaw.sim.trace import Trace


@dataclass(frozen=True, slots=True)
class SimConfig:
    window_s: float = 300.0
    horizon_s: float = 60.0
    train_fraction: float = 1 / 3
    #: Copies of the trace superposed (None: enough for ``target_rps``; see ``calibrate``).
    amplify: int | None = None
    target_rps: float = 10.0
    headroom: float = 4.0
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    scenarios: ScenarioConfig = field(default_factory=ScenarioConfig)


@dataclass(frozen=True, slots=True)
class GridResult:
    calibration: Calibration
    metrics: list[RunMetrics]
    #: What each (scenario, seed) injected.
    notes: dict[tuple[str, int], str]
    #: The full results the ``keep`` predicate asked for (timelines are large).
    kept: list[RunResult]
    wall_s: float

    @property
    def attempts(self) -> int:
        return sum(m.attempts for m in self.metrics)

    @property
    def replay_s(self) -> float:
        return sum(m.wall_s for m in self.metrics)

    def summaries(self) -> list[Summary]:
        return summarize(self.metrics)


#: Called before each run with (scenario, policy, seed).
Progress = Callable[[str, str, int], None]


def run_grid(
    trace: Trace,
    *,
    scenarios: Sequence[str] = tuple(SCENARIOS),
    policies: Sequence[str] = DEFAULT_POLICIES,
    seeds: Sequence[int] = (0, 1, 2),
    config: SimConfig | None = None,
    progress: Progress | None = None,
    keep: Callable[[RunResult], bool] | None = None,
) -> GridResult:
    """Every policy on every scenario and seed; one demand per (scenario, seed), shared by
    the policies (they face the very same requests and random draws)."""
    config = config or SimConfig()
    for name in scenarios:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}: use one of {', '.join(SCENARIOS)}")
    check_policy_names(policies)
    wall0 = time.perf_counter()
    calibration = calibrate(
        trace,
        window_s=config.window_s,
        train_fraction=config.train_fraction,
        target_rps=config.target_rps,
        headroom=config.headroom,
        amplify=config.amplify,
        backend=config.replay.backend,
    )
    replay_config = replace(config.replay, backend=calibration.backend)
    metrics: list[RunMetrics] = []
    notes: dict[tuple[str, int], str] = {}
    kept: list[RunResult] = []
    for seed in seeds:
        for scenario in scenarios:
            demand = build_demand(
                trace,
                scenario,
                seed,
                window_s=config.window_s,
                horizon_s=config.horizon_s,
                train_fraction=config.train_fraction,
                calibration=calibration,
                config=config.scenarios,
            )
            notes[(scenario, seed)] = demand.note
            prepared = prepare(demand, replay_config)
            for name in policies:
                if progress is not None:
                    progress(scenario, name, seed)
                policy = make_policy(
                    name, config=replay_config.policy, legit=prepared.legit_segments
                )
                result = replay(prepared, policy, replay_config)
                metrics.append(run_metrics(result))
                if keep is not None and keep(result):
                    kept.append(result)
    return GridResult(calibration, metrics, notes, kept, time.perf_counter() - wall0)


def metrics_table(summaries: Sequence[Summary], *, title: str | None = None) -> Table:
    """Mean ± 95% CI half-width across seeds, one row per (scenario, policy)."""
    table = Table(title=title, show_lines=False)
    table.add_column("scenario")
    table.add_column("policy")
    for _, heading in CORE:
        table.add_column(heading, justify="right")
    previous = None
    for s in summaries:
        if previous is not None and s.scenario != previous:
            table.add_section()
        previous = s.scenario
        table.add_row(
            s.scenario,
            s.policy,
            *(format_value(name, s.mean[name], s.ci[name]) for name, _ in CORE),
        )
    return table
