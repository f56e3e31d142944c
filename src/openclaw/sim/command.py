"""``openclaw simulate``: the replay grid, a progress bar, the table, and the report."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from openclaw.errors import ConfigError
from openclaw.settings import Settings
from openclaw.sim.policies import DEFAULT_POLICIES, resolve_policy
from openclaw.sim.run import GridResult, grid_size, metrics_table, run_grid, sim_config
from openclaw.sim.scenarios import SCENARIOS
from openclaw.sim.trace import load_trace
from openclaw.telemetry.parsers import Format

ALL_SCENARIOS: Final = tuple(SCENARIOS)
DEFAULT_SEEDS: Final = (0, 1, 2)
__all__ = ["ALL_SCENARIOS", "DEFAULT_POLICIES", "DEFAULT_SEEDS", "Options", "run"]


@dataclass(frozen=True, slots=True)
class Options:
    trace: Path
    fmt: Format = "nasa-tsv"
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    policies: tuple[str, ...] = DEFAULT_POLICIES
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    amplify: int | None = None
    train_fraction: float = 1 / 3
    json_path: Path | None = None
    #: Write ``report.md`` and the plots here (needs matplotlib: ``openclaw[report]``).
    report_dir: Path | None = None
    #: Also replay each sweepable policy at other values of its knob (trade-off curves).
    sweep: bool = False


def run(
    options: Options, *, settings: Settings, argv: Sequence[str], console: Console
) -> GridResult:
    """Load, calibrate, replay every (scenario, policy, seed), print what came out."""
    status = Console(stderr=True)
    if options.report_dir is not None:
        _check_matplotlib()
    # Resolved first: a wrong name fails at once, and a model directory is loaded once.
    specs = [resolve_policy(p) for p in options.policies]
    names = [spec.name for spec in specs]
    trace = load_trace(options.trace, options.fmt)
    config = sim_config(settings, train_fraction=options.train_fraction, amplify=options.amplify)
    total = grid_size(options.scenarios, specs, options.seeds, sweep=options.sweep, config=config)
    keep = None
    if options.report_dir is not None:
        from openclaw.sim.report import keep_for_report

        keep = keep_for_report(names, options.seeds)
    with Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=status,
        transient=True,
    ) as bar:
        task = bar.add_task("replay", total=total)

        def progress(scenario: str, policy: str, seed: int) -> None:
            bar.update(task, description=f"{scenario} / {policy} / seed {seed}", advance=1)

        grid = run_grid(
            trace,
            scenarios=options.scenarios,
            policies=specs,
            seeds=options.seeds,
            config=config,
            progress=progress,
            keep=keep,
            sweep=options.sweep,
        )
    rejected = f", {trace.rejected:,} lines rejected" if trace.rejected else ""
    console.print(
        f"trace: {trace.source} ({len(trace):,} requests, {len(trace.names):,} clients{rejected})"
    )
    console.print(f"calibration: {grid.calibration.describe()}")
    first = options.seeds[0]
    for scenario in options.scenarios:
        console.print(f"  {scenario} (seed {first}): {grid.notes[(scenario, first)]}")
    console.print(
        metrics_table(
            grid.summaries(),
            title=f"mean ± 95% CI over {len(options.seeds)} seed(s)",
        )
    )
    speed = grid.attempts / grid.replay_s if grid.replay_s > 0 else 0.0
    console.print(
        f"{len(grid.runs)} runs, {grid.attempts:,} simulated requests (attempts) in "
        f"{grid.wall_s:.1f} s ({grid.replay_s:.1f} s in the replay loop: "
        f"{speed:,.0f} requests/s, {speed * 60 / 1e6:.1f} million/min)"
    )
    command = shlex.join(argv)
    console.print(f"command: {command}")
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(document(grid, command), indent=2) + "\n")
    if options.report_dir is not None:
        from openclaw.sim.report import write_report

        with status.status(f"writing the report to {options.report_dir}"):
            files = write_report(grid, trace, options.report_dir, command=command)
            (options.report_dir / "runs.json").write_text(
                json.dumps(document(grid, command), indent=2) + "\n"
            )
        console.print(f"report: {files.markdown} ({len(files.plots)} plots beside it)")
    return grid


def document(grid: GridResult, command: str) -> dict[str, Any]:
    """Every run's metrics, the summaries and the setup, as JSON-ready data."""
    return {
        "command": command,
        "calibration": grid.calibration.describe(),
        "amplify": grid.calibration.amplify,
        "backend": asdict(grid.calibration.backend),
        "seeds": list(grid.seeds),
        "notes": {f"{s}/{seed}": note for (s, seed), note in grid.notes.items()},
        "episodes": {f"{s}/{seed}": ep for (s, seed), ep in grid.episodes.items()},
        "runs": [asdict(m) for m in grid.metrics],
        "summaries": [asdict(s) for s in grid.summaries()],
        "sweeps": [{"knob": p.knob, "value": p.value, **asdict(p.metrics)} for p in grid.sweeps],
        "wall_s": grid.wall_s,
        "attempts": grid.attempts,
    }


def _check_matplotlib() -> None:
    """Fail before hours of replay, not after, when the report cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError("--report needs matplotlib: pip install 'openclaw[report]'") from exc
