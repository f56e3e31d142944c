"""``openclaw simulate``: the replay grid, a progress bar, and the table."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from openclaw.settings import Settings
from openclaw.sim.policies import DEFAULT_POLICIES
from openclaw.sim.run import GridResult, SimConfig, metrics_table, run_grid
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


def run(
    options: Options, *, settings: Settings, argv: Sequence[str], console: Console
) -> GridResult:
    """Load, calibrate, replay every (scenario, policy, seed), print what came out."""
    status = Console(stderr=True)
    trace = load_trace(options.trace, options.fmt)
    config = SimConfig(
        window_s=settings.window_s,
        horizon_s=settings.label_horizon_s,
        train_fraction=options.train_fraction,
        amplify=options.amplify,
    )
    total = len(options.scenarios) * len(options.policies) * len(options.seeds)
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
            policies=options.policies,
            seeds=options.seeds,
            config=config,
            progress=progress,
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
        f"{len(grid.metrics)} runs, {grid.attempts:,} simulated requests (attempts) in "
        f"{grid.wall_s:.1f} s ({grid.replay_s:.1f} s in the replay loop: "
        f"{speed:,.0f} requests/s, {speed * 60 / 1e6:.1f} million/min)"
    )
    console.print(f"command: {shlex.join(argv)}")
    if options.json_path is not None:
        doc = {
            "command": shlex.join(argv),
            "calibration": grid.calibration.describe(),
            "amplify": grid.calibration.amplify,
            "backend": asdict(grid.calibration.backend),
            "notes": {f"{s}/{seed}": note for (s, seed), note in grid.notes.items()},
            "runs": [asdict(m) for m in grid.metrics],
            "summaries": [asdict(s) for s in grid.summaries()],
            "wall_s": grid.wall_s,
            "attempts": grid.attempts,
        }
        options.json_path.write_text(json.dumps(doc, indent=2) + "\n")
    return grid
