"""The stages, one after the other (the package's docstring says what each does)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from openclaw.demo.drive import Measured, drive, warm_up
from openclaw.demo.plan import (
    SCENARIO,
    US,
    DemoOptions,
    Plan,
    make_plan,
    policy_toml,
    utc,
)
from openclaw.demo.report import DemoResult, class_rows, plot, render
from openclaw.errors import ConfigError
from openclaw.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from openclaw.sim.validate import Verdict


def demo_settings(workdir: Path, options: DemoOptions) -> Settings:
    """The environment's settings with the demo's choices (module docstring) and its embedded
    parts in ``workdir``."""
    env = Settings()
    overrides: dict[str, Any] = {
        "store_url": "memory://",
        "telemetry_url": f"duckdb://{(workdir / 'service-telemetry.duckdb').resolve()}",
        "model_registry_path": workdir / "models",
        "policy_mode": "model",
        "policy_path": workdir / "policy.toml",
        "enforce": True,
        "train_coverage": options.coverage,
        "model_min_refill_rate": max(env.model_min_refill_rate, 1.0 / env.label_horizon_s),
    }
    return Settings(**overrides)


@contextlib.contextmanager
def _stage(status: Console, title: str) -> Iterator[Progress]:
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    status.print(f"[bold]{title}[/bold]", highlight=False)
    with Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=status,
    ) as bar:
        yield bar


def _fresh_workdir(workdir: Path | None) -> Path:
    """The work directory, emptied of a previous demo's files (a rerun starts afresh)."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="openclaw-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("models", "build"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    for name in ("trace.duckdb", "service-telemetry.duckdb"):
        for suffix in ("", ".wal"):
            (workdir / f"{name}{suffix}").unlink(missing_ok=True)
    return workdir


#: What the demo needs beyond the core install: torch (training), matplotlib (the plots),
#: httpx (the HTTP client); module -> package.
NEEDS: Final = {"torch": "torch", "matplotlib": "matplotlib", "httpx": "httpx"}


def check_dependencies() -> None:
    """ConfigError naming what to install when a dependency of the demo is missing, before
    anything runs."""
    missing = [pkg for mod, pkg in NEEDS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ConfigError(
            f"the demo needs {', '.join(missing)}: pip install 'openclaw[train]' httpx "
            "(./scripts/setup installs everything)"
        )


def run_demo(options: DemoOptions, *, console: Console, status: Console) -> DemoResult:
    """Every stage (module docstring): progress on ``status``, the report on ``console``."""
    check_dependencies()
    began = time.perf_counter()
    stages: dict[str, float] = {}
    workdir = _fresh_workdir(options.workdir)
    settings = demo_settings(workdir, options)

    def timed(name: str, t0: float) -> None:
        stages[name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    trace_url, plan = _ingest(options, settings, workdir=workdir, status=status)
    timed("ingest", t0)
    t0 = time.perf_counter()
    version = _train(
        options, settings, workdir=workdir, trace_url=trace_url, plan=plan, status=status
    )
    timed("train", t0)
    t0 = time.perf_counter()
    verdict = _validate(options, settings, version=version, status=status)
    timed("validate", t0)
    t0 = time.perf_counter()
    measured = _serve_and_replay(
        options,
        settings,
        workdir=workdir,
        plan=plan,
        version=version,
        status=status,
        timed=timed,
    )
    timed("replay", t0)
    t0 = time.perf_counter()
    plots = plot(measured, plan, workdir)
    timed("plots", t0)
    result = DemoResult(
        workdir=workdir,
        plan=plan,
        measured=measured,
        rows=class_rows(measured),
        model_version=version,
        verdict=verdict,
        plots=plots,
        seconds=time.perf_counter() - began,
        stages=stages,
    )
    render(result, console, options=options)
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _ingest(
    options: DemoOptions, settings: Settings, *, workdir: Path, status: Console
) -> tuple[str, Plan]:
    """Stage 1: the trace into a DuckDB file (the training data), and the replay's plan."""
    from openclaw.sim.trace import load_trace
    from openclaw.telemetry.ingest import file_size, ingest_file
    from openclaw.telemetry.stores import open_event_store

    trace_url = f"duckdb://{(workdir / 'trace.duckdb').resolve()}"
    with _stage(status, f"1/5 ingest {options.trace}") as bar:
        # Parsed first: a file with no request in it fails here, before anything is written.
        trace = load_trace(options.trace, options.fmt)
        plan = make_plan(trace, settings=settings, options=options)
        size = file_size(options.trace)
        task = bar.add_task("into trace.duckdb", total=size, note="")
        store = open_event_store(trace_url, settings=settings)
        try:
            summary = ingest_file(
                options.trace,
                options.fmt,
                store,
                settings=settings,
                progress=lambda done: bar.update(task, completed=done),
            )
        finally:
            store.close()
        bar.update(task, completed=size, note=f"{summary.accepted:,} requests")
    return trace_url, plan


def _train(
    options: DemoOptions,
    settings: Settings,
    *,
    workdir: Path,
    trace_url: str,
    plan: Plan,
    status: Console,
) -> str:
    """Stage 2: ``openclaw train --head``, then ``openclaw models register``."""
    from openclaw.model.registry import Registry
    from openclaw.model.train import TrainOptions, run_train

    status.print(
        f"[bold]2/5 train on the part before {utc(plan.split_us)}, register[/bold]",
        highlight=False,
    )
    report = run_train(
        TrainOptions(out=workdir / "build", store_url=trace_url, head=options.train_fraction),
        settings=settings,
        status_console=status,
    )
    version = Registry(settings.model_registry_path).register(
        report.artifact.directory, reason="openclaw demo"
    )
    fitted = report.trained.fitted
    status.print(
        f"  {version}: {report.data.counts.pairs:,} (client, next window) pairs, "
        f"{fitted.epochs} epochs in {fitted.seconds:.1f} s, calibrated for coverage "
        f"{report.trained.config.coverage:g}",
        highlight=False,
    )
    return version


def _validate(
    options: DemoOptions, settings: Settings, *, version: str, status: Console
) -> Verdict:
    """Stage 3: ``openclaw validate`` against static+gov on the scraper scenario, then the
    promotion (whatever the verdict: the reason in the audit log says which it was)."""
    from openclaw.model.registry import Registry
    from openclaw.sim.validate import Options as GateOptions
    from openclaw.sim.validate import replay_both
    from openclaw.sim.validate import report as gate_report

    registry = Registry(settings.model_registry_path)
    with _stage(status, "3/5 validate against the static baseline (openclaw validate)") as bar:
        task = bar.add_task(f"replaying {SCENARIO}, seed {options.seed}", total=None, note="")
        verdict, grid = replay_both(
            GateOptions(
                candidate=f"{registry.path_of(version)}+gov",
                baseline="static+gov",
                trace=options.trace,
                fmt=options.fmt,
                scenarios=(SCENARIO,),
                seeds=(options.seed,),
                amplify=options.validate_amplify,
                train_fraction=options.train_fraction,
            ),
            settings=settings,
        )
        bar.update(task, total=1, completed=1, note=f"{len(grid.metrics)} runs")
    status.print(f"  calibration: {grid.calibration.describe()}", highlight=False)
    gate_report(verdict, status)
    outcome = "passed" if verdict.passed else "failed (promoted anyway: a demo)"
    registry.promote(version, reason=f"openclaw demo: validate {outcome}")
    return verdict


def _serve_and_replay(
    options: DemoOptions,
    settings: Settings,
    *,
    workdir: Path,
    plan: Plan,
    version: str,
    status: Console,
    timed: Callable[[str, float], None],
) -> Measured:
    """Stages 4 and 5: the service on the demo's clock, the warm-up, the replay."""
    from openclaw.clock import FakeClock
    from openclaw.service.server import BackgroundServer, build

    t0 = time.perf_counter()
    (workdir / "policy.toml").write_text(policy_toml(plan.default))
    warm_start = plan.warm_ts_us[0] if plan.warm_ts_us.size else plan.start_us
    clock = FakeClock(int(warm_start) / US)
    built = build(settings, wall_clock=clock, store_clock=clock, policy_poll_s=0.005)
    server = BackgroundServer(built.app, settings).start()
    try:
        with _stage(status, f"4/5 serve {version} on {server.url}, warm up") as bar:
            task = bar.add_task("telemetry of the trace before the replay", total=1, note="")
            warmed = warm_up(plan, base_url=server.url, built=built, seed=options.seed)
            bar.update(task, completed=1, note=f"{warmed:,} events")
        timed("serve", t0)
        title = (
            f"5/5 replay {utc(plan.start_us)} to {utc(plan.end_us)} over HTTP, with "
            f"{plan.scraper_name} at {options.scraper_rps:g}/s"
        )
        with _stage(status, title) as bar:
            task = bar.add_task("requests", total=len(plan), note="")

            def on_progress(sent: int, admitted: int, throttled: int) -> None:
                note = f"{admitted:,} admitted, {throttled:,} throttled"
                bar.update(task, completed=sent, note=note)

            return drive(
                plan,
                base_url=server.url,
                built=built,
                clock=clock,
                seed=options.seed,
                max_seconds=options.max_seconds,
                progress=on_progress,
            )
    finally:
        server.stop()
