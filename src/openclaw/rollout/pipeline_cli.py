"""``openclaw pipeline run | extract | train | validate | register | package | canary | status``.

Light at import (typer only): ``openclaw --help`` loads this module; the pipeline, torch and
the simulator are imported when a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

if TYPE_CHECKING:
    from openclaw.rollout.pipeline import Pipeline, StepOptions

pipeline_app = typer.Typer(
    help="The retraining pipeline: extract, train, validate (the gate), register, package, "
    "canary; every run recorded in PIPELINE_DIR/runs/RUN_ID/run.json, drift in metrics.prom.",
    no_args_is_help=True,
)

#: The formats `openclaw ingest` reads (cli.IngestFormat; repeated so that this module does not
#: import the CLI it is part of).
Format = Literal["clf", "combined", "jsonl", "nasa-tsv"]

RunOption = Annotated[
    str | None,
    typer.Option(
        "--run",
        help="Run id (default: for run, a new one; for a single step, the latest run still "
        "going on, or for extract a new one when there is none). A new id names a new run.",
        show_default=False,
    ),
]
DirOption = Annotated[
    Path | None,
    typer.Option(
        "--pipeline-dir",
        help="Pipeline state directory (default: OPENCLAW_PIPELINE_DIR, ./pipeline).",
        show_default=False,
    ),
]
RegistryOption = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Model registry (default: OPENCLAW_MODEL_REGISTRY_PATH, ./models).",
        show_default=False,
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(help="Telemetry store URL (default: OPENCLAW_TELEMETRY_URL).", show_default=False),
]
TraceOption = Annotated[
    Path | None,
    typer.Option(help="Use this access log instead of a store.", show_default=False),
]
FormatOption = Annotated[Format, typer.Option("--format", "-f", help="With --trace: its format.")]
DaysOption = Annotated[
    float | None,
    typer.Option(min=0.0001, help="The last N days of the data (default: OPENCLAW_TRAIN_DAYS)."),
]
SeedOption = Annotated[
    int | None, typer.Option(min=0, help="Training seed (default: OPENCLAW_TRAIN_SEED).")
]
EpochsOption = Annotated[
    int | None,
    typer.Option(min=1, help="Most passes over the data (default: OPENCLAW_TRAIN_EPOCHS, auto)."),
]
BaselineOption = Annotated[
    str | None,
    typer.Option(
        help="What the gate compares the model with (default: the champion, else "
        "OPENCLAW_PIPELINE_GATE_BASELINE, persistence+gov).",
        show_default=False,
    ),
]
GateTraceOption = Annotated[
    Path | None,
    typer.Option(
        "--gate-trace",
        help="Trace the gate replays (default: OPENCLAW_GATE_TRACE).",
        show_default=False,
    ),
]
GateFormatOption = Annotated[Format, typer.Option("--gate-format", help="The gate trace's format.")]
GateScenarioOption = Annotated[
    list[str] | None,
    typer.Option("--gate-scenario", help="Scenario of the gate (repeat) (default: all)."),
]
GateSeedOption = Annotated[
    list[int] | None,
    typer.Option("--gate-seed", help="Seed of the gate (repeat) (default: 0 1 2)."),
]
GateAmplifyOption = Annotated[
    int | None,
    typer.Option(
        "--gate-amplify", min=1, help="Copies of the gate trace superposed (default: 10/s)."
    ),
]
ServiceOption = Annotated[
    str | None,
    typer.Option(
        "--service-url",
        help="Also start the canary through this service's admin API (needs "
        "OPENCLAW_ADMIN_TOKEN) (default: OPENCLAW_PIPELINE_SERVICE_URL, off: the alias only).",
        show_default=False,
    ),
]


def _options(
    *,
    store: str | None = None,
    trace: Path | None = None,
    fmt: Format = "nasa-tsv",
    days: float | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    baseline: str | None = None,
    gate_trace: Path | None = None,
    gate_format: Format = "nasa-tsv",
    gate_scenario: list[str] | None = None,
    gate_seed: list[int] | None = None,
    gate_amplify: int | None = None,
    service_url: str | None = None,
) -> StepOptions:
    from openclaw.rollout.pipeline import (
        DataOptions,
        GateStepOptions,
        StepOptions,
        TrainStepOptions,
    )

    return StepOptions(
        data=DataOptions(store_url=store, trace=trace, fmt=fmt, days=days),
        train=TrainStepOptions(seed=seed, epochs=epochs),
        gate=GateStepOptions(
            baseline=baseline,
            trace=gate_trace,
            fmt=gate_format,
            scenarios=tuple(gate_scenario) if gate_scenario else None,
            seeds=tuple(gate_seed) if gate_seed else None,
            amplify=gate_amplify,
        ),
        service_url=service_url,
    )


def _pipeline(pipeline_dir: Path | None, registry: Path | None) -> Pipeline:
    from rich.console import Console

    from openclaw.model.registry import Registry
    from openclaw.rollout.pipeline import Pipeline
    from openclaw.settings import Settings

    settings = Settings()
    return Pipeline(
        pipeline_dir or settings.pipeline_dir,
        settings=settings,
        registry=Registry(registry or settings.model_registry_path),
        # A table wider than 80 columns stays readable in a file or a pipe.
        console=Console(width=None if sys.stdout.isatty() else 200),
        status_console=Console(stderr=True),
        argv=sys.argv,
    )


def _execute(
    command: str,
    steps: tuple[str, ...],
    *,
    run: str | None,
    pipeline_dir: Path | None,
    registry: Path | None,
    options: StepOptions | None = None,
    whole: bool = False,
) -> None:
    """Run the steps; a failed gate exits 1 (as `openclaw validate`), any other error 2."""
    from openclaw.errors import GateRejected, OpenClawError

    try:
        pipeline = _pipeline(pipeline_dir, registry)
        pipeline.execute(run, steps, options or _options(), whole=whole)
    except GateRejected as exc:
        typer.echo(f"openclaw pipeline {command}: {exc}", err=True)
        raise typer.Exit(1) from exc
    except (OpenClawError, OSError, ValueError) as exc:
        typer.echo(f"openclaw pipeline {command}: {exc}", err=True)
        raise typer.Exit(2) from exc


@pipeline_app.command("run")
def pipeline_run(
    *,
    run: RunOption = None,
    pipeline_dir: DirOption = None,
    registry: RegistryOption = None,
    store: StoreOption = None,
    trace: TraceOption = None,
    fmt: FormatOption = "nasa-tsv",
    days: DaysOption = None,
    seed: SeedOption = None,
    epochs: EpochsOption = None,
    baseline: BaselineOption = None,
    gate_trace: GateTraceOption = None,
    gate_format: GateFormatOption = "nasa-tsv",
    gate_scenario: GateScenarioOption = None,
    gate_seed: GateSeedOption = None,
    gate_amplify: GateAmplifyOption = None,
    service_url: ServiceOption = None,
) -> None:
    """Every step in order: extract, train, validate, register, package, canary. Steps a
    named run (--run) has done already are skipped; a failed gate stops the run (exit 1)."""
    from openclaw.rollout.pipeline import STEPS

    options = _options(
        store=store,
        trace=trace,
        fmt=fmt,
        days=days,
        seed=seed,
        epochs=epochs,
        baseline=baseline,
        gate_trace=gate_trace,
        gate_format=gate_format,
        gate_scenario=gate_scenario,
        gate_seed=gate_seed,
        gate_amplify=gate_amplify,
        service_url=service_url,
    )
    _execute(
        "run",
        STEPS,
        run=run,
        pipeline_dir=pipeline_dir,
        registry=registry,
        options=options,
        whole=True,
    )


@pipeline_app.command("extract")
def pipeline_extract(
    *,
    run: RunOption = None,
    pipeline_dir: DirOption = None,
    registry: RegistryOption = None,
    store: StoreOption = None,
    trace: TraceOption = None,
    fmt: FormatOption = "nasa-tsv",
    days: DaysOption = None,
) -> None:
    """Features of the data's last days (as `openclaw features`), their distribution, and the
    drift of the latest day against the retained baseline (PIPELINE_DIR/metrics.prom)."""
    options = _options(store=store, trace=trace, fmt=fmt, days=days)
    _execute(
        "extract",
        ("extract",),
        run=run,
        pipeline_dir=pipeline_dir,
        registry=registry,
        options=options,
    )


@pipeline_app.command("train")
def pipeline_train(
    *,
    run: RunOption = None,
    pipeline_dir: DirOption = None,
    registry: RegistryOption = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="The store extract read, when it was not OPENCLAW_TELEMETRY_URL (the record "
            "keeps its URL without the password).",
            show_default=False,
        ),
    ] = None,
    seed: SeedOption = None,
    epochs: EpochsOption = None,
) -> None:
    """Train on the data extract chose (as `openclaw train`); the artifact goes to the run's
    directory."""
    options = _options(store=store, seed=seed, epochs=epochs)
    _execute(
        "train", ("train",), run=run, pipeline_dir=pipeline_dir, registry=registry, options=options
    )


@pipeline_app.command("validate")
def pipeline_validate(
    *,
    run: RunOption = None,
    pipeline_dir: DirOption = None,
    registry: RegistryOption = None,
    baseline: BaselineOption = None,
    gate_trace: GateTraceOption = None,
    gate_format: GateFormatOption = "nasa-tsv",
    gate_scenario: GateScenarioOption = None,
    gate_seed: GateSeedOption = None,
    gate_amplify: GateAmplifyOption = None,
) -> None:
    """The gate (as `openclaw validate`): the trained model against the champion; exit 1 with
    the reasons when it fails."""
    options = _options(
        baseline=baseline,
        gate_trace=gate_trace,
        gate_format=gate_format,
        gate_scenario=gate_scenario,
        gate_seed=gate_seed,
        gate_amplify=gate_amplify,
    )
    _execute(
        "validate",
        ("validate",),
        run=run,
        pipeline_dir=pipeline_dir,
        registry=registry,
        options=options,
    )


@pipeline_app.command("register")
def pipeline_register(
    *, run: RunOption = None, pipeline_dir: DirOption = None, registry: RegistryOption = None
) -> None:
    """Register the validated model (once: a re-run finds the version it registered)."""
    _execute("register", ("register",), run=run, pipeline_dir=pipeline_dir, registry=registry)


@pipeline_app.command("package")
def pipeline_package(
    *, run: RunOption = None, pipeline_dir: DirOption = None, registry: RegistryOption = None
) -> None:
    """Build the image with the model baked in, tagged NAME:MODEL_VERSION, when buildah and
    the builder script are there (OPENCLAW_PIPELINE_IMAGE_BUILDER); else skipped, saying why."""
    _execute("package", ("package",), run=run, pipeline_dir=pipeline_dir, registry=registry)


@pipeline_app.command("canary")
def pipeline_canary(
    *,
    run: RunOption = None,
    pipeline_dir: DirOption = None,
    registry: RegistryOption = None,
    service_url: ServiceOption = None,
) -> None:
    """Make the model the registry's challenger (the service starts its canary from it);
    with --service-url, also start the canary through the service's admin API."""
    _execute(
        "canary",
        ("canary",),
        run=run,
        pipeline_dir=pipeline_dir,
        registry=registry,
        options=_options(service_url=service_url),
    )


@pipeline_app.command("status")
def pipeline_status(
    *,
    run: RunOption = None,
    pipeline_dir: DirOption = None,
    registry: RegistryOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run record as is.")] = False,
) -> None:
    """A run's steps, versions and drift (default: the latest run); --json: its record."""
    import json

    from rich.console import Console
    from rich.table import Table

    from openclaw.errors import OpenClawError
    from openclaw.rollout.pipeline import STEPS

    try:
        pipeline = _pipeline(pipeline_dir, registry)
        if run is not None:
            record = pipeline.get(run)
        else:
            runs = pipeline.runs()
            if not runs:
                raise FileNotFoundError(f"no runs in {pipeline.runs_dir}")
            record = runs[-1]
    except (OpenClawError, OSError) as exc:
        typer.echo(f"openclaw pipeline status: {exc}", err=True)
        raise typer.Exit(2) from exc
    if json_out:
        typer.echo(json.dumps(record.body, indent=2))
        return
    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(
        title=f"run {record.id}: {record.outcome or 'in progress'}"
        + (f" ({record.body.get('reason')})" if record.body.get("reason") else ""),
        title_justify="left",
    )
    for column in ("step", "status", "started", "finished", "note or error"):
        table.add_column(column)
    for name in STEPS:
        step = record.step(name)
        table.add_row(
            name,
            str(step["status"]),
            str(step.get("started") or ""),
            str(step.get("finished") or ""),
            str(step.get("error") or step.get("note") or ""),
        )
    console.print(table)
    versions = record.section("versions")
    if versions:
        console.print(
            "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), highlight=False
        )
    drift = record.section("metrics").get("drift")
    if drift and drift.get("max") is not None:
        console.print(
            f"drift: max PSI {drift['max']:.3f} ({drift['max_feature']}) over "
            f"{drift['latest_day']['since']} .. {drift['latest_day']['until']}",
            highlight=False,
        )
