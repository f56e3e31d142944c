"""The validation gate: ``openclaw validate --candidate A --baseline B``.

Both policies are replayed on the same demands (every scenario and seed asked for; common
random numbers, so they face the very same requests and draws), and the candidate fails when,
in any scenario:

* it is **worse than the baseline** on a core metric (``GATED``): the per-seed difference
  ``d = candidate - baseline`` (signed so that positive is worse: goodput counts the other
  way) has a mean above both its own noise (the half-width of its 95% confidence interval,
  Student's t over the seeds; 0 for one seed) and the tolerance from the settings
  (``gate_tolerance``: absolute on a share, relative to the baseline's goodput on goodput;
  ``gate_tolerance_slo_s`` on SLO-violation seconds). Pairing by seed is what makes the
  comparison sharp: a capacity drop that lands on a busy hour for one seed moves both
  policies, not their difference.
* it **breaks an absolute bound** (``gate_max_legit_throttled``, ``gate_max_abuse_admitted``
  (in scenarios with abuse), ``gate_max_slo_violation_s``), judged on its mean over the seeds,
  whatever the baseline does.

The candidate and the baseline are whatever ``resolve_policy`` takes: a policy name as
``openclaw simulate`` takes them, or the path of a model directory (``+gov`` for the
governor), so a trained model is validated against the champion with the same command.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Final, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from openclaw.settings import Settings
from openclaw.sim.metrics import CORE, SHARES, RunMetrics, format_value, mean_ci
from openclaw.sim.policies import ModelLoader, resolve_policy
from openclaw.sim.run import GridResult, run_grid, sim_config
from openclaw.sim.scenarios import SCENARIOS
from openclaw.sim.trace import load_trace
from openclaw.telemetry.parsers import Format

HEADINGS: Final = dict(CORE)
#: The metrics the gate compares, and whether a higher value is worse.
GATED: Final = (
    ("legit_throttled", True),
    ("legit_dropped", True),
    ("clients_throttled", True),
    ("under_allocated", True),
    ("abuse_admitted", True),
    ("slo_violation_s", True),
    ("goodput_rps", False),
)
#: Exit code of a candidate that failed the gate (2 is a usage error).
FAILED_EXIT: Final = 1


@dataclass(frozen=True, slots=True)
class GateConfig:
    tolerance: float = 0.005
    tolerance_slo_s: float = 10.0
    max_legit_throttled: float = 0.1
    max_abuse_admitted: float = 0.5
    max_slo_violation_s: float = 1800.0

    @classmethod
    def from_settings(cls, settings: Settings) -> GateConfig:
        return cls(
            tolerance=settings.gate_tolerance,
            tolerance_slo_s=settings.gate_tolerance_slo_s,
            max_legit_throttled=settings.gate_max_legit_throttled,
            max_abuse_admitted=settings.gate_max_abuse_admitted,
            max_slo_violation_s=settings.gate_max_slo_violation_s,
        )


#: The absolute bounds: metric, the GateConfig field, and its environment variable.
BOUNDS: Final = (
    ("legit_throttled", "max_legit_throttled", "OPENCLAW_GATE_MAX_LEGIT_THROTTLED"),
    ("abuse_admitted", "max_abuse_admitted", "OPENCLAW_GATE_MAX_ABUSE_ADMITTED"),
    ("slo_violation_s", "max_slo_violation_s", "OPENCLAW_GATE_MAX_SLO_VIOLATION_S"),
)


def _delta(metric: str, value: float) -> str:
    if metric in SHARES:
        return f"{100 * value:.2f} points"
    if metric == "slo_violation_s":
        return f"{value:.0f} s"
    return f"{value:.3f}/s"


@dataclass(frozen=True, slots=True)
class Check:
    """One comparison of the gate, in one scenario."""

    scenario: str
    metric: str
    kind: Literal["baseline", "bound"]
    candidate: float  #: mean over seeds
    reference: float  #: the baseline's mean, or the bound
    #: How much worse the candidate is (mean paired difference; for a bound, the excess).
    worse_by: float
    #: How much worse it may be: max(noise, tolerance) (0 for a bound).
    allowed: float
    #: The half-width of the 95% CI of the paired difference (0 for a bound).
    noise: float
    setting: str = ""  #: the environment variable of a bound

    @property
    def passed(self) -> bool:
        return self.worse_by <= self.allowed

    def reason(self) -> str:
        heading = HEADINGS[self.metric]
        cand = format_value(self.metric, self.candidate)
        ref = format_value(self.metric, self.reference)
        if self.kind == "bound":
            return f"{self.scenario}: {heading} {cand} is above the bound {ref} ({self.setting})"
        noisy = self.noise > 0 and self.noise >= self.allowed
        why = "the 95% CI of the difference across seeds" if noisy else "the tolerance"
        return (
            f"{self.scenario}: {heading} {cand} against the baseline's {ref}: worse by "
            f"{_delta(self.metric, self.worse_by)}, more than {_delta(self.metric, self.allowed)} "
            f"({why})"
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    candidate: str
    baseline: str
    scenarios: tuple[str, ...]
    seeds: int
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)


def judge(
    candidate: Sequence[RunMetrics],
    baseline: Sequence[RunMetrics],
    gate: GateConfig,
    *,
    names: tuple[str, str] = ("candidate", "baseline"),
) -> Verdict:
    """The gate's checks on runs of the candidate and the baseline, paired by (scenario,
    seed). Raises ValueError when the two do not cover the same scenarios and seeds."""
    cand = {(m.scenario, m.seed): m for m in candidate}
    base = {(m.scenario, m.seed): m for m in baseline}
    if set(cand) != set(base) or not cand:
        raise ValueError("the candidate and the baseline must be run on the same scenarios/seeds")
    scenarios = list(dict.fromkeys(m.scenario for m in candidate))
    checks: list[Check] = []
    for scenario in scenarios:
        keys = sorted(k for k in cand if k[0] == scenario)
        pairs = [(cand[k], base[k]) for k in keys]
        for metric, higher_worse in GATED:
            sign = 1.0 if higher_worse else -1.0
            c_vals = [float(getattr(c, metric)) for c, _ in pairs]
            b_vals = [float(getattr(b, metric)) for _, b in pairs]
            d_mean, d_ci = mean_ci([sign * (c - b) for c, b in zip(c_vals, b_vals, strict=True)])
            b_mean = mean_ci(b_vals)[0]
            if metric == "slo_violation_s":
                tolerance = gate.tolerance_slo_s
            elif metric in SHARES:
                tolerance = gate.tolerance
            else:
                tolerance = gate.tolerance * abs(b_mean)
            checks.append(
                Check(
                    scenario=scenario,
                    metric=metric,
                    kind="baseline",
                    candidate=mean_ci(c_vals)[0],
                    reference=b_mean,
                    worse_by=d_mean,
                    allowed=max(d_ci, tolerance),
                    noise=d_ci,
                )
            )
        has_abuse = any(c.abusive_requests > 0 for c, _ in pairs)
        for metric, field_name, env in BOUNDS:
            if metric == "abuse_admitted" and not has_abuse:
                continue
            value = mean_ci([float(getattr(c, metric)) for c, _ in pairs])[0]
            bound = float(getattr(gate, field_name))
            checks.append(
                Check(
                    scenario=scenario,
                    metric=metric,
                    kind="bound",
                    candidate=value,
                    reference=bound,
                    worse_by=value - bound,
                    allowed=0.0,
                    noise=0.0,
                    setting=env,
                )
            )
    seeds = len({k[1] for k in cand})
    return Verdict(names[0], names[1], tuple(scenarios), seeds, tuple(checks))


# -- the command ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    candidate: str
    baseline: str
    trace: Path | None = None  #: None: ``settings.gate_trace``
    fmt: Format = "nasa-tsv"
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    seeds: tuple[int, ...] = (0, 1, 2)
    amplify: int | None = None
    train_fraction: float = 1 / 3
    json_path: Path | None = None


def replay_both(
    options: Options,
    *,
    settings: Settings,
    model_loader: ModelLoader | None = None,
) -> tuple[Verdict, GridResult]:
    """Resolve both policies (before any replay, so a wrong name fails at once), replay them
    on every scenario and seed, and judge."""
    candidate = resolve_policy(options.candidate, model_loader=model_loader)
    baseline = resolve_policy(options.baseline, model_loader=model_loader)
    trace = load_trace(options.trace or settings.gate_trace, options.fmt)
    config = sim_config(settings, train_fraction=options.train_fraction, amplify=options.amplify)
    grid = run_grid(
        trace,
        scenarios=options.scenarios,
        # Labelled by role: the same policy may well be on both sides.
        policies=[replace(candidate, name="candidate"), replace(baseline, name="baseline")],
        seeds=options.seeds,
        config=config,
    )
    verdict = judge(
        [m for m in grid.metrics if m.policy == "candidate"],
        [m for m in grid.metrics if m.policy == "baseline"],
        GateConfig.from_settings(settings),
        names=(candidate.name, baseline.name),
    )
    return verdict, grid


def verdict_table(verdict: Verdict) -> Table:
    """One row per scenario: the candidate's value of each gated metric, the baseline's in
    brackets, in red where a check failed."""
    table = Table(
        title=f"candidate {verdict.candidate} (baseline {verdict.baseline} in brackets), "
        f"mean over {verdict.seeds} seed(s)",
        title_justify="left",
    )
    table.add_column("scenario")
    for metric, _ in GATED:
        table.add_column(HEADINGS[metric], justify="right")
    table.add_column("verdict")
    for scenario in verdict.scenarios:
        mine = [c for c in verdict.checks if c.scenario == scenario]
        cells: list[Text | str] = [scenario]
        for metric, _ in GATED:
            versus = next(c for c in mine if c.metric == metric and c.kind == "baseline")
            bad = any(not c.passed for c in mine if c.metric == metric)
            cells.append(
                Text(
                    f"{format_value(metric, versus.candidate)} "
                    f"({format_value(metric, versus.reference)})",
                    style="bold red" if bad else "",
                )
            )
        ok = all(c.passed for c in mine)
        cells.append(Text("pass" if ok else "FAIL", style="green" if ok else "bold red"))
        table.add_row(*cells)
    return table


def report(verdict: Verdict, console: Console) -> None:
    console.print(verdict_table(verdict))
    for check in verdict.failures:
        console.print(Text(f"FAIL {check.reason()}", style="red"), highlight=False)
    n = len(verdict.scenarios)
    if verdict.passed:
        console.print(
            Text(
                f"PASS: {verdict.candidate} is no worse than {verdict.baseline} on any core "
                f"metric in {n} scenario(s), and within the absolute bounds",
                style="bold green",
            )
        )
    else:
        console.print(
            Text(
                f"FAIL: {verdict.candidate} against {verdict.baseline}: "
                f"{len(verdict.failures)} check(s) failed",
                style="bold red",
            )
        )


def run(
    options: Options,
    *,
    settings: Settings,
    argv: Sequence[str],
    console: Console,
    model_loader: ModelLoader | None = None,
) -> Verdict:
    status = Console(stderr=True)
    with status.status(f"replaying {options.candidate} and {options.baseline}"):
        verdict, grid = replay_both(options, settings=settings, model_loader=model_loader)
    console.print(f"calibration: {grid.calibration.describe()}", highlight=False)
    report(verdict, console)
    command = shlex.join(argv)
    console.print(f"{len(grid.metrics)} runs in {grid.wall_s:.1f} s; command: {command}")
    if options.json_path is not None:
        doc = {
            "command": command,
            "candidate": verdict.candidate,
            "baseline": verdict.baseline,
            "passed": verdict.passed,
            "failures": [c.reason() for c in verdict.failures],
            "checks": [asdict(c) | {"passed": c.passed} for c in verdict.checks],
            "runs": [asdict(m) for m in grid.metrics],
        }
        options.json_path.write_text(json.dumps(doc, indent=2) + "\n")
    return verdict
