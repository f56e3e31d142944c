"""Runs of scenarios x policies x seeds, and their table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from rich.table import Table

from openclaw.settings import Settings
from openclaw.sim.backend import BackendConfig
from openclaw.sim.metrics import (
    CORE,
    RunMetrics,
    Summary,
    format_value,
    run_metrics,
    summarize,
)
from openclaw.sim.policies import DEFAULT_POLICIES, ModelLoader, PolicySpec, resolve_policy
from openclaw.sim.replay import Prepared, ReplayConfig, RunResult, prepare, replay
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


def sim_config(
    settings: Settings, *, train_fraction: float = 1 / 3, amplify: int | None = None
) -> SimConfig:
    """The simulator's configuration from the settings: windows, label horizon, and the SLO
    (``slo_p99_ms``, ``slo_error_rate``) the backend is judged against and the governor
    steers by."""
    backend = BackendConfig(slo_p99_ms=settings.slo_p99_ms, slo_error_rate=settings.slo_error_rate)
    return SimConfig(
        window_s=settings.window_s,
        horizon_s=settings.label_horizon_s,
        train_fraction=train_fraction,
        amplify=amplify,
        replay=ReplayConfig(backend=backend),
    )


#: The values of each knob a sweep replays, besides the configured one (which the grid has
#: run already): from tight to loose.
SWEEP_VALUES: Final = {
    "static_budget": (0.001, 0.003, 0.01, 0.03, 0.1),
    "percentile_margin": (1.0, 1.5, 2.0, 3.0, 5.0),
    "persistence_margin": (1.0, 1.5, 2.0, 3.0, 5.0),
}


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One run of a policy with one knob of its ``PolicyConfig`` changed."""

    knob: str
    value: float
    metrics: RunMetrics  #: its ``policy`` is the swept policy's name


@dataclass(frozen=True, slots=True)
class GridResult:
    calibration: Calibration
    metrics: list[RunMetrics]
    #: What each (scenario, seed) injected.
    notes: dict[tuple[str, int], str]
    #: The full results the ``keep`` predicate asked for (timelines are large).
    kept: list[RunResult]
    wall_s: float
    config: SimConfig = field(default_factory=SimConfig)
    scenarios: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()  #: the policies' names, in the order they ran
    seeds: tuple[int, ...] = ()
    #: Each (scenario, seed)'s injected episode, seconds on the replay's clock.
    episodes: dict[tuple[str, int], tuple[float, float] | None] = field(default_factory=dict)
    sweeps: list[SweepPoint] = field(default_factory=list)

    @property
    def runs(self) -> list[RunMetrics]:
        """Every run: the grid's and the sweeps'."""
        return self.metrics + [p.metrics for p in self.sweeps]

    @property
    def attempts(self) -> int:
        return sum(m.attempts for m in self.runs)

    @property
    def replay_s(self) -> float:
        return sum(m.wall_s for m in self.runs)

    def summaries(self) -> list[Summary]:
        return summarize(self.metrics)

    def sweep_summaries(self) -> list[tuple[str, float, Summary]]:
        """Per (scenario, policy, knob value) of the sweeps, with the grid's own runs at the
        configured value: ``(knob, value, summary)``, ordered by scenario, policy, value."""
        groups: dict[tuple[str, str, str, float], list[RunMetrics]] = {}
        policy_config = self.config.replay.policy
        for p in self.sweeps:
            groups.setdefault((p.metrics.scenario, p.metrics.policy, p.knob, p.value), []).append(
                p.metrics
            )
        knobs = {(p.metrics.policy, p.knob) for p in self.sweeps}
        for m in self.metrics:
            for policy, knob in knobs:
                if m.policy == policy:
                    value = float(getattr(policy_config, knob))
                    groups.setdefault((m.scenario, policy, knob, value), []).append(m)
        order = {name: i for i, name in enumerate(self.scenarios)}
        porder = {name: i for i, name in enumerate(self.policies)}
        out = []
        for (_, _, knob, value), runs in sorted(
            groups.items(),
            key=lambda kv: (order.get(kv[0][0], 0), porder.get(kv[0][1], 0), kv[0][3]),
        ):
            (summary,) = summarize(runs)
            out.append((knob, value, summary))
        return out


#: Called before each run with (scenario, policy, seed).
Progress = Callable[[str, str, int], None]


def grid_size(
    scenarios: Sequence[str],
    policies: Sequence[str | PolicySpec],
    seeds: Sequence[int],
    *,
    sweep: bool = False,
    config: SimConfig | None = None,
) -> int:
    """Replays ``run_grid`` makes with these arguments (for a progress bar)."""
    per = len(policies)
    if sweep:
        policy_config = (config or SimConfig()).replay.policy
        for spec in policies:
            knob = _knob(spec)
            if knob is not None:
                here = float(getattr(policy_config, knob))
                per += sum(1 for v in SWEEP_VALUES[knob] if v != here)
    return len(scenarios) * len(seeds) * per


def _knob(spec: str | PolicySpec) -> str | None:
    if isinstance(spec, PolicySpec):
        return spec.knob
    from openclaw.sim.policies import GOVERNED_SUFFIX, SWEEP_KNOBS

    return SWEEP_KNOBS.get(spec.removesuffix(GOVERNED_SUFFIX))


def run_grid(
    trace: Trace,
    *,
    scenarios: Sequence[str] = tuple(SCENARIOS),
    policies: Sequence[str | PolicySpec] = DEFAULT_POLICIES,
    seeds: Sequence[int] = (0, 1, 2),
    config: SimConfig | None = None,
    progress: Progress | None = None,
    keep: Callable[[RunResult], bool] | None = None,
    sweep: bool = False,
    model_loader: ModelLoader | None = None,
) -> GridResult:
    """Every policy on every scenario and seed; one demand per (scenario, seed), shared by
    the policies (they face the very same requests and random draws).

    ``policies``: names or paths (``resolve_policy``, with ``model_loader`` for paths) or
    resolved specs; a run's metrics carry the spec's name. ``sweep``: also replay every
    policy with a knob (``SWEEP_KNOBS``) at each other value of ``SWEEP_VALUES``, for the
    trade-off curves."""
    config = config or SimConfig()
    for name in scenarios:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}: use one of {', '.join(SCENARIOS)}")
    specs = [
        p if isinstance(p, PolicySpec) else resolve_policy(p, model_loader=model_loader)
        for p in policies
    ]
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
    episodes: dict[tuple[str, int], tuple[float, float] | None] = {}
    kept: list[RunResult] = []
    sweeps: list[SweepPoint] = []
    policy_config = replay_config.policy
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
            episodes[(scenario, seed)] = demand.episode_s
            prepared = prepare(demand, replay_config)
            for spec in specs:
                if progress is not None:
                    progress(scenario, spec.name, seed)
                policy = spec.build(policy_config, prepared.legit_segments)
                result = replay(prepared, policy, replay_config)
                metrics.append(replace(run_metrics(result), policy=spec.name))
                if keep is not None and keep(result):
                    kept.append(result)
            if sweep:
                sweeps += _sweep(prepared, specs, replay_config, progress)
    return GridResult(
        calibration=calibration,
        metrics=metrics,
        notes=notes,
        kept=kept,
        wall_s=time.perf_counter() - wall0,
        config=replace(config, replay=replay_config),
        scenarios=tuple(scenarios),
        policies=tuple(spec.name for spec in specs),
        seeds=tuple(seeds),
        episodes=episodes,
        sweeps=sweeps,
    )


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


def _sweep(
    prepared: Prepared,
    specs: Sequence[PolicySpec],
    replay_config: ReplayConfig,
    progress: Progress | None,
) -> list[SweepPoint]:
    """The sweepable policies at the other values of their knob, on one prepared demand."""
    out: list[SweepPoint] = []
    policy_config = replay_config.policy
    d = prepared.demand
    for spec in specs:
        if spec.knob is None:
            continue
        here = float(getattr(policy_config, spec.knob))
        for value in SWEEP_VALUES[spec.knob]:
            if value == here:
                continue
            if progress is not None:
                progress(d.scenario, f"{spec.name} {spec.knob}={value:g}", d.seed)
            knobs: dict[str, Any] = {spec.knob: value}
            swept = replace(policy_config, **knobs)
            result = replay(
                prepared,
                spec.build(swept, prepared.legit_segments),
                replace(replay_config, policy=swept),
            )
            out.append(SweepPoint(spec.knob, value, replace(run_metrics(result), policy=spec.name)))
    return out
