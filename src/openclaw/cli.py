"""The ``openclaw`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import typer

from openclaw import __version__
from openclaw.bench import LIMITER_DURATION_S, LIMITER_ROUNDS
from openclaw.errors import OpenClawError
from openclaw.rollout.pipeline_cli import pipeline_app


class _Typer(typer.Typer):
    """The ``openclaw`` command: a setting that does not validate (``OPENCLAW_HTTP_PORT=99999``)
    is one line per bad variable and exit 2, not pydantic's traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            for error in exc.errors():
                name = ".".join(str(part) for part in error["loc"])
                where = f"OPENCLAW_{name.upper()}" if name else "settings"
                typer.echo(f"openclaw: invalid {where}: {error['msg']}", err=True)
            raise SystemExit(2) from None


app = _Typer(
    name="openclaw",
    # Plain help text: rich markup would swallow every "[default: ...]" the options document.
    rich_markup_mode=None,
    help="Rate limiting whose limits learn.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    help="Benchmarks against peers measured in the same run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


def _fail(command: str, exc: Exception) -> typer.Exit:
    """The one way a command reports an error it expects: one line naming the command, exit 2."""
    typer.echo(f"openclaw {command}: {exc}", err=True)
    return typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"openclaw {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """OpenClaw: per-client token buckets sized by a model of the traffic the service has seen."""


config_app = typer.Typer(help="The settings (OPENCLAW_* variables).", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("docs")
def config_docs(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file [default: stdout].")
    ] = None,
) -> None:
    """The configuration reference (every setting, its variable, type, default, constraints
    and meaning) as Markdown: what docs/configuration.md holds."""
    from openclaw.config_docs import settings_reference

    text = settings_reference()
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as exc:
        raise _fail("config docs", exc) from exc
    typer.echo(f"wrote {out}")


@bench_app.command("limiter")
def bench_limiter(
    duration: Annotated[
        float, typer.Option(min=0.01, help="Seconds each contender runs per round.")
    ] = LIMITER_DURATION_S,
    rounds: Annotated[
        int, typer.Option(min=1, help="Rounds; every round runs every contender.")
    ] = LIMITER_ROUNDS,
    redis: Annotated[
        str,
        typer.Option(
            help="none: in-process only; auto: start a throwaway redis-server; "
            "or a redis:// URL to benchmark against.",
        ),
    ] = "none",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this file.")
    ] = None,
) -> None:
    """Decisions/s of the token-bucket engine against limits and pyrate-limiter.

    Prints FAIL next to a missed target but exits 0: it is a report, not a gate.
    """
    # Imported here, not at the top: it loads the stores and settings (a few hundred ms),
    # which `openclaw --help` and every other command should not pay for.
    from openclaw.bench.limiter import Options, command_line, run

    options = Options(duration_s=duration, rounds=rounds, redis=redis, json_path=json_path)
    try:
        run(options, command=command_line(sys.argv))
    except OpenClawError as exc:
        raise _fail("bench limiter", exc) from exc


@bench_app.command("grpc")
def bench_grpc(
    *,
    rate: Annotated[float, typer.Option(min=1, help="ShouldRateLimit calls per second.")] = 2000,
    seconds: Annotated[float, typer.Option(min=0.5, help="Seconds of load per round.")] = 3.0,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; each runs every contender.")] = 3,
    redis: Annotated[
        str, typer.Option(help="none, auto (a throwaway redis-server), or a redis:// URL.")
    ] = "auto",
    generator: Annotated[
        Literal["h2load", "python"],
        typer.Option(help="Load generator: h2load (nghttp2-client, C) or python (gRPC futures)."),
    ] = "h2load",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this file.")
    ] = None,
) -> None:
    """Envoy's ShouldRateLimit latency at a fixed rate, against a bare gRPC servicer."""
    from openclaw.bench.grpc import run as run_grpc
    from openclaw.bench.limiter import command_line

    try:
        results = run_grpc(
            rate=rate,
            seconds=seconds,
            rounds=rounds,
            redis=redis,
            command=command_line(sys.argv),
            generator=generator,
        )
    except OpenClawError as exc:
        raise _fail("bench grpc", exc) from exc
    if json_path is not None:
        import json

        from openclaw.bench.report import grpc_payload

        payload = grpc_payload(
            results,
            command=command_line(sys.argv),
            rate=rate,
            seconds=seconds,
            rounds=rounds,
            redis=redis,
            generator=generator,
        )
        json_path.write_text(json.dumps(payload, indent=2) + "\n")


@bench_app.command("http")
def bench_http(
    *,
    seconds: Annotated[
        float, typer.Option(min=1, help="Seconds of each wrk run (throughput, batch).")
    ] = 3.0,
    fixed_seconds: Annotated[
        float, typer.Option(min=0.5, help="Seconds of each fixed-rate run.")
    ] = 4.0,
    rate: Annotated[
        float, typer.Option(min=1, help="Requests per second of the fixed-rate part.")
    ] = 5000.0,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; each runs every contender.")] = 3,
    redis: Annotated[
        str,
        typer.Option(
            help="none: memory store only; auto: also a throwaway redis-server; "
            "or also a redis:// URL.",
        ),
    ] = "none",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this file.")
    ] = None,
) -> None:
    """The Rating API over loopback HTTP: GET /api/v1/rate against /healthz, p99 at a fixed
    rate, batch decisions per second. Needs wrk and node on PATH.

    Prints FAIL next to a missed target but exits 0: it is a report, not a gate.
    """
    from openclaw.bench.http import Options as HttpOptions
    from openclaw.bench.http import command_line as http_command_line
    from openclaw.bench.http import run as run_http

    options = HttpOptions(
        seconds=seconds,
        fixed_seconds=fixed_seconds,
        rate=rate,
        rounds=rounds,
        redis=redis,
        json_path=json_path,
    )
    try:
        run_http(options, command=http_command_line(sys.argv))
    except OpenClawError as exc:
        raise _fail("bench http", exc) from exc


@bench_app.command("ingest")
def bench_ingest(
    lines: Annotated[
        int, typer.Option(min=1000, help="Lines of the input (the NASA trace, repeated).")
    ] = 1_000_000,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; each runs every contender.")] = 3,
    clickhouse: Annotated[
        str,
        typer.Option(
            help="none: DuckDB only; auto: also a throwaway clickhouse-server; "
            "or also the clickhouse:// URL given.",
        ),
    ] = "none",
    trace: Annotated[Path, typer.Option(help="The NASA TSV trace the input repeats.")] = Path(
        "../shared/data/traces/nasa_19950801.tsv"
    ),
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this file.")
    ] = None,
) -> None:
    """Log import (openclaw ingest) into DuckDB and ClickHouse against the stores' native
    loaders, on the same file. Targets: 300,000 events/s (DuckDB), 100,000 (ClickHouse).

    Prints FAIL next to a missed target but exits 0: it is a report, not a gate.
    """
    from openclaw.bench.ingest import Options as IngestOptions
    from openclaw.bench.ingest import command_line as ingest_command_line
    from openclaw.bench.ingest import run as run_ingest

    options = IngestOptions(
        lines=lines, rounds=rounds, clickhouse=clickhouse, trace=trace, json_path=json_path
    )
    try:
        run_ingest(options, command=ingest_command_line(sys.argv))
    except OpenClawError as exc:
        raise _fail("bench ingest", exc) from exc


@bench_app.command("features")
def bench_features(
    *,
    events: Annotated[int, typer.Option(min=1, help="Synthetic events to generate.")] = 10_000_000,
    clients: Annotated[
        int, typer.Option(min=1, help="Clients the events are drawn from.")
    ] = 200_000,
    hours: Annotated[float, typer.Option(min=0.1, help="Span of the events, hours.")] = 24.0,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; each runs both contenders.")] = 1,
    db: Annotated[
        Path | None,
        typer.Option(help="DuckDB file of the events: reused if it exists, else written and kept."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this file.")
    ] = None,
) -> None:
    """Feature extraction of a DuckDB telemetry file (10 million events by default) against a
    plain GROUP BY (client, window) count of the same table. Target: under 60 s.

    Prints FAIL next to a missed target but exits 0: it is a report, not a gate.
    """
    from openclaw.bench.features import Options as FeatureOptions
    from openclaw.bench.features import run as run_features
    from openclaw.bench.limiter import command_line

    options = FeatureOptions(
        events=events, clients=clients, hours=hours, rounds=rounds, db=db, json_path=json_path
    )
    try:
        run_features(options, command=command_line(sys.argv))
    except OpenClawError as exc:
        raise _fail("bench features", exc) from exc


@app.command("features")
def features(
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write the rows to.")],
    store: Annotated[
        str | None,
        typer.Option(help="Telemetry store URL (default: OPENCLAW_TELEMETRY_URL)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="First instant (ISO 8601 with offset, e.g. 2024-05-01T00:00Z); "
            "moved forward to a window boundary (default: the first event's window)."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="End, exclusive; moved back to a window boundary "
            "(default: the end of the last event's window)."
        ),
    ] = None,
    window: Annotated[
        float | None,
        typer.Option(min=0.000001, help="Window, seconds (default: OPENCLAW_WINDOW_S, 300)."),
    ] = None,
) -> None:
    """Per-(client, window) features and labels of a telemetry store, to a Parquet file."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from openclaw.errors import EventRejected
    from openclaw.features.offline import export_features
    from openclaw.settings import Settings
    from openclaw.telemetry.events import parse_timestamp

    def instant(name: str, value: str | None) -> int | None:
        if value is None:
            return None
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            return parse_timestamp(text)
        except EventRejected as exc:
            raise typer.BadParameter(f"{value!r}: {exc}", param_hint=f"--{name}") from None

    since_us = instant("since", since)
    until_us = instant("until", until)
    console = Console(stderr=True)
    try:
        settings = Settings()
        url = store or settings.telemetry_url
        with Progress(
            TextColumn("features"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("features", total=None)
            summary = export_features(
                url,
                out,
                settings=settings,
                since_us=since_us,
                until_us=until_us,
                window_s=window,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (OpenClawError, OSError) as exc:
        raise _fail("features", exc) from exc
    span = ""
    if summary.first_window_start_us is not None and summary.last_window_start_us is not None:
        from datetime import UTC, datetime

        first = datetime.fromtimestamp(summary.first_window_start_us / 1e6, UTC)
        last = datetime.fromtimestamp(summary.last_window_start_us / 1e6, UTC)
        span = f", windows starting {first:%Y-%m-%dT%H:%M:%SZ} .. {last:%Y-%m-%dT%H:%M:%SZ}"
    typer.echo(
        f"wrote {out}: {summary.rows:,} rows, {summary.clients:,} clients, "
        f"{summary.windows:,} windows{span} in {summary.seconds:.1f} s"
    )


#: The formats of `openclaw ingest FILE` (telemetry.parsers.FORMATS; spelled out here so that
#: `openclaw --help` does not import NumPy; a test holds the two equal).
IngestFormat = Literal["clf", "combined", "jsonl", "nasa-tsv"]
INGEST_FORMATS: tuple[str, ...] = get_args(IngestFormat)


@app.command("ingest")
def ingest(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Log file to import (gzip-compressed files are read as such).",
            show_default=False,
        ),
    ] = None,
    *,
    fmt: Annotated[
        IngestFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="clf (Common Log Format), combined (Apache/NCSA combined), jsonl (one "
            "event per line, as POST /api/v1/telemetry takes them), nasa-tsv.",
            show_default=False,
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="Telemetry store URL (default: OPENCLAW_TELEMETRY_URL)."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Instead of FILE: consume a Redis stream, redis://HOST:PORT/DB (with --stream, "
            "--group, --consumer); entries hold one field, event, with the event's JSON.",
            show_default=False,
        ),
    ] = None,
    stream: Annotated[str, typer.Option(help="With --from: the stream.")] = "openclaw:telemetry",
    group: Annotated[str, typer.Option(help="With --from: the consumer group.")] = "openclaw",
    consumer: Annotated[
        str, typer.Option(help="With --from: this consumer's name (keep it across restarts).")
    ] = "ingest-1",
    idle_exit: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="With --from: exit when no entry arrived for this many seconds."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="With --from: entries read and stored per batch.")
    ] = 1000,
) -> None:
    """Import a log file into the telemetry store: a progress bar, then a summary of accepted
    and rejected lines (by reason) and the first rejected lines as FILE:LINE: reason: detail.

    Importing a file again stores nothing twice. Exit code 0 even with rejected lines;
    2 when the file cannot be read, 1 when the store fails.

    With --from redis://..., consume a Redis stream through a consumer group instead: each
    batch is acknowledged once the store committed it, so a crash loses nothing and a restart
    (same --consumer) stores nothing twice. Runs until SIGTERM (the batch in hand is finished
    first) or --idle-exit; bad entries go to the stream STREAM:rejected.
    """
    if source is not None:
        if file is not None:
            raise typer.BadParameter("give FILE or --from, not both", param_hint="--from")
        _ingest_stream(
            source,
            stream=stream,
            group=group,
            consumer=consumer,
            store=store,
            idle_exit=idle_exit,
            batch_size=batch_size,
        )
        return
    if file is None:
        raise typer.BadParameter("give the FILE to import", param_hint="FILE")
    if fmt is None:
        raise typer.BadParameter(
            f"required with FILE: one of {', '.join(INGEST_FORMATS)}", param_hint="--format"
        )
    from rich.console import Console

    from openclaw.errors import ConfigError, IngestError
    from openclaw.settings import Settings
    from openclaw.telemetry.ingest import import_file

    try:
        settings = Settings()
        import_file(
            file,
            fmt,
            store_url=store or settings.telemetry_url,
            settings=settings,
            console=Console(),
            status_console=Console(stderr=True),
        )
    except (IngestError, ConfigError) as exc:
        raise _fail("ingest", exc) from exc
    except OpenClawError as exc:
        typer.echo(f"openclaw ingest: {exc}", err=True)
        raise typer.Exit(1) from exc


def _ingest_stream(
    source: str,
    *,
    stream: str,
    group: str,
    consumer: str,
    store: str | None,
    idle_exit: float | None,
    batch_size: int,
) -> None:
    from openclaw.errors import ConfigError, IngestError
    from openclaw.settings import Settings
    from openclaw.telemetry.streams import dead_letter_stream, run_consumer

    try:
        settings = Settings()
        stats = run_consumer(
            source,
            stream=stream,
            group=group,
            consumer=consumer,
            store_url=store or settings.telemetry_url,
            settings=settings,
            idle_exit_s=idle_exit,
            batch_size=batch_size,
            progress=lambda line: typer.echo(line, err=True),
        )
    except (IngestError, ConfigError) as exc:
        raise _fail("ingest", exc) from exc
    except OpenClawError as exc:
        typer.echo(f"openclaw ingest: {exc}", err=True)
        raise typer.Exit(1) from exc
    rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.rejected.items()))
    typer.echo(
        f"{stream} (group {group}, consumer {consumer}): {stats.entries} entries, "
        f"{stats.stored} stored, {stats.duplicates} already stored, "
        f"{sum(stats.rejected.values())} rejected"
        + (f" ({rejected}; see {dead_letter_stream(stream)})" if rejected else "")
        + f"; ended: {stats.ended}"
    )
    if stats.ended == "failed":
        typer.echo("openclaw ingest: the store kept failing; entries left pending", err=True)
        raise typer.Exit(1)


@app.command("generate")
def generate_traffic(
    *,
    days: Annotated[float, typer.Option(min=0.01, help="Days of traffic.")] = 7.0,
    clients: Annotated[
        int, typer.Option(min=1, help="Legitimate clients (each sends at least one request).")
    ] = 10_000,
    seed: Annotated[int, typer.Option(min=0, help="The same seed gives the same events.")] = 0,
    start: Annotated[
        str | None,
        typer.Option(
            help="First day, YYYY-MM-DD, from its UTC midnight (default: DAYS days before today)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write JSON lines (the schema `openclaw ingest --format "
            "jsonl` reads) to this file; gzip-compressed if it ends in .gz.",
        ),
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Insert into this telemetry store URL instead.")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Write the abusive clients to this CSV (client_id,kind,start,end)."),
    ] = None,
    abusive: Annotated[
        int, typer.Option(min=0, help="Abuse incidents: scraper, runaway, distributed, in turn.")
    ] = 3,
    calibration_report: Annotated[
        Path | None,
        typer.Option(
            help="Write a Markdown table of per-client rate and burst "
            "distributions, the real trace against the generated traffic."
        ),
    ] = None,
    trace: Annotated[
        Path, typer.Option(help="The real trace (NASA TSV) for --calibration-report.")
    ] = Path("../shared/data/traces/nasa_19950801.tsv"),
) -> None:
    """Synthetic telemetry: a daily cycle, heavy-tailed clients, bursty sessions, response
    times and errors that rise with load, and labelled abusive clients. Calibrated on the NASA
    trace (docs/synthetic-traffic.md)."""
    import math
    from datetime import UTC, datetime, timedelta

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from openclaw.bench.limiter import command_line
    from openclaw.telemetry import synthetic

    if out is not None and store is not None:
        raise typer.BadParameter("give --out or --store, not both", param_hint="--out")
    if out is None and store is None and calibration_report is None:
        raise typer.BadParameter(
            "give --out FILE.jsonl or --store URL (or --calibration-report)", param_hint="--out"
        )
    try:
        if start is None:
            first = datetime.now(UTC).date() - timedelta(days=math.ceil(days))
            start = first.isoformat()
        spec = synthetic.SyntheticSpec(
            days=days,
            clients=clients,
            abusive=abusive,
            start_us=synthetic.start_of_day_us(start),
        )
        options = synthetic.GenerateOptions(
            spec=spec,
            seed=seed,
            out=out,
            store_url=store,
            labels_path=labels,
            report_path=calibration_report,
            trace_path=trace,
            command=command_line(sys.argv),
        )
        with Progress(
            TextColumn("generate"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("generate", total=None)
            summary = synthetic.run_generate(
                options,
                progress_total=lambda n: bar.update(task, total=n),
                progress=lambda k: bar.advance(task, k),
            )
    except OpenClawError as exc:
        raise _fail("generate", exc) from exc
    where = out or store or "nowhere (report only)"
    stored = "" if summary.stored is None else f" ({summary.stored:,} new in the store)"
    rate = summary.events / max(summary.generate_s, 1e-9)
    typer.echo(
        f"{summary.events:,} events{stored} of {summary.clients:,} clients from {start}, "
        f"{days:g} days, to {where}; {summary.labels} abusive clients labelled"
        + (f" in {labels}" if labels else "")
        + f"; backend capacity {summary.capacity_rps:.1f} req/s; generated in "
        f"{summary.generate_s:.2f} s ({rate:,.0f} events/s), written in {summary.write_s:.1f} s"
    )
    if calibration_report is not None:
        typer.echo(f"calibration report: {calibration_report}")


@bench_app.command("telemetry-http")
def bench_telemetry_http(
    *,
    seconds: Annotated[float, typer.Option(min=1, help="Seconds of each run.")] = 3.0,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; each runs every contender.")] = 3,
    events: Annotated[int, typer.Option(min=1, help="Events per request body.")] = 1000,
    connections: Annotated[int, typer.Option(min=1, help="wrk connections.")] = 4,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this file.")
    ] = None,
) -> None:
    """NDJSON events/s through POST /api/v1/telemetry into the DuckDB store, against the same
    server carrying the same bodies unread, the parser alone and the store alone. Needs wrk.

    Prints FAIL next to a missed target but exits 0: it is a report, not a gate.
    """
    from openclaw.bench.limiter import command_line
    from openclaw.bench.telemetry_http import Options as TelemetryOptions
    from openclaw.bench.telemetry_http import run as run_telemetry

    options = TelemetryOptions(
        seconds=seconds, rounds=rounds, events=events, connections=connections, json_path=json_path
    )
    try:
        run_telemetry(options, command=command_line(sys.argv))
    except OpenClawError as exc:
        raise _fail("bench telemetry-http", exc) from exc


@app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind [default: OPENCLAW_HTTP_HOST, 127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port [default: OPENCLAW_HTTP_PORT, 8080]."),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="Static policy file (TOML or YAML) [default: OPENCLAW_POLICY_PATH]."),
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Also serve Envoy's gRPC rate-limit service on this port "
            "[default: OPENCLAW_GRPC_PORT, off].",
        ),
    ] = None,
) -> None:
    """Serve the Rating API over HTTP until SIGTERM (in-flight requests finish).

    Runs on embedded defaults: the in-process memory store and the built-in static policy.
    SIGHUP, or a change to the policy file, reloads the policy.
    """
    import asyncio

    # Imported here: uvicorn and the app cost more to import than other commands should pay.
    from openclaw.service.server import serve as run_server
    from openclaw.settings import Settings

    try:
        overrides: dict[str, object] = {}
        if policy is not None:
            overrides["policy_path"] = policy
        if grpc_port is not None:
            overrides["grpc_port"] = grpc_port
        settings = Settings(**overrides)  # type: ignore[arg-type]
        asyncio.run(
            run_server(settings, host=host or settings.http_host, port=port or settings.http_port)
        )
    except OpenClawError as exc:
        raise _fail("serve", exc) from exc


@app.command("demo")
def demo(
    trace: Annotated[
        Path | None,
        typer.Argument(
            help="Access log to replay (default: ../shared/data/traces/nasa_19950801.tsv, "
            "beside the working directory or the checkout).",
            show_default=False,
        ),
    ] = None,
    *,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Directory for the demo's files (default: a new temporary one)."),
    ] = None,
    fmt: Annotated[
        IngestFormat, typer.Option("--format", "-f", help="The trace's format.")
    ] = "nasa-tsv",
    minutes: Annotated[
        float, typer.Option(min=1, help="Minutes of trace time replayed over HTTP.")
    ] = 60.0,
    lead_minutes: Annotated[
        float, typer.Option(min=0, help="Of which, before the scraper starts.")
    ] = 10.0,
    scraper_rps: Annotated[
        float, typer.Option(min=0.01, help="The scraper's rate, requests per second of trace.")
    ] = 4.0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the scenario and spreads.")] = 0,
    amplify: Annotated[
        int | None,
        typer.Option(
            min=1, help="Copies of the trace the validation superposes (default: as validate)."
        ),
    ] = None,
    max_requests: Annotated[
        int, typer.Option(min=1, help="Most requests replayed (the replay is cut short).")
    ] = 40_000,
    max_seconds: Annotated[
        float, typer.Option(min=1, help="Most wall seconds the replay may take.")
    ] = 180.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the report's figures here.")
    ] = None,
) -> None:
    """The whole loop on embedded defaults: ingest a trace, train a model, validate it against
    the static baseline, serve it, replay part of the trace over HTTP with a scraper in it;
    print who was throttled (counted from the answers) and write plots. See docs/demo.md."""
    from rich.console import Console

    from openclaw.demo import DemoOptions, resolve_trace, run_demo

    try:
        options = DemoOptions(
            trace=resolve_trace(trace),
            fmt=fmt,
            workdir=workdir,
            minutes=minutes,
            lead_minutes=lead_minutes,
            scraper_rps=scraper_rps,
            seed=seed,
            max_requests=max_requests,
            max_seconds=max_seconds,
            validate_amplify=amplify,
            json_path=json_path,
        )
        width = None if sys.stdout.isatty() else 160
        run_demo(options, console=Console(width=width), status=Console(stderr=True, width=width))
    except (OpenClawError, OSError, ValueError) as exc:
        raise _fail("demo", exc) from exc


@app.command("simulate")
def simulate(
    *,
    trace: Annotated[Path, typer.Option(help="Access log to replay.", show_default=False)],
    fmt: Annotated[
        IngestFormat, typer.Option("--format", "-f", help="Its format (as `openclaw ingest`).")
    ] = "nasa-tsv",
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="Scenario (repeat): trace, runaway, scraper, distributed, "
            "flash_crowd, capacity_drop [default: all]."
        ),
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            help="Policy (repeat): none, static, percentile, persistence, oracle, "
            "and static+gov etc., or a model directory (PATH, PATH+gov) "
            "[default: all of them, each finite one with the governor]."
        ),
    ] = None,
    seed: Annotated[list[int] | None, typer.Option(help="Seed (repeat) [default: 0 1 2].")] = None,
    amplify: Annotated[
        int | None,
        typer.Option(min=1, help="Copies of the trace superposed [default: enough for 10/s]."),
    ] = None,
    train_fraction: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="Share of the trace that trains.")
    ] = 1 / 3,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write every run's metrics here.")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Write DIR/report.md and PNG plots (trade-offs, timelines) into this directory "
            "(needs openclaw[report]).",
            metavar="DIR",
        ),
    ] = None,
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep",
            help="Also replay static, percentile and persistence at other values of their "
            "knob (budget, margin): the report's trade-off curves. Costs 4 runs per policy.",
        ),
    ] = False,
) -> None:
    """Replay a trace time-forward through the limiter with injected abuse and a simulated
    backend; print each policy's metrics per scenario (mean ± 95% CI over seeds)."""
    from rich.console import Console

    from openclaw.settings import Settings
    from openclaw.sim.command import ALL_SCENARIOS, DEFAULT_POLICIES, DEFAULT_SEEDS, Options, run

    try:
        options = Options(
            trace=trace,
            fmt=fmt,
            scenarios=tuple(scenario) if scenario else ALL_SCENARIOS,
            policies=tuple(policy) if policy else DEFAULT_POLICIES,
            seeds=tuple(seed) if seed else DEFAULT_SEEDS,
            amplify=amplify,
            train_fraction=train_fraction,
            json_path=json_path,
            report_dir=report,
            sweep=sweep,
        )
        # A table wider than 80 columns stays readable in a file or a pipe.
        console = Console(width=None if sys.stdout.isatty() else 200)
        run(options, settings=Settings(), argv=sys.argv, console=console)
    except (OpenClawError, ValueError, OSError) as exc:
        raise _fail("simulate", exc) from exc


@app.command("validate")
def validate(
    *,
    candidate: Annotated[
        str,
        typer.Option(
            help="The policy to judge: a name as `openclaw simulate --policy` takes it, or "
            "the path of a model directory (+gov: with the governor).",
            show_default=False,
        ),
    ],
    baseline: Annotated[
        str, typer.Option(help="The policy it must be no worse than (same forms).")
    ],
    trace: Annotated[
        Path | None,
        typer.Option(help="Access log to replay [default: OPENCLAW_GATE_TRACE, the NASA day]."),
    ] = None,
    fmt: Annotated[
        IngestFormat, typer.Option("--format", "-f", help="Its format (as `openclaw ingest`).")
    ] = "nasa-tsv",
    scenario: Annotated[
        list[str] | None, typer.Option(help="Scenario (repeat) [default: all].")
    ] = None,
    seed: Annotated[list[int] | None, typer.Option(help="Seed (repeat) [default: 0 1 2].")] = None,
    amplify: Annotated[
        int | None,
        typer.Option(min=1, help="Copies of the trace superposed [default: enough for 10/s]."),
    ] = None,
    train_fraction: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="Share of the trace that trains.")
    ] = 1 / 3,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write every check and run here.")
    ] = None,
) -> None:
    """The validation gate: replay both policies on the same scenarios and seeds; exit 1 with
    the reasons when the candidate is worse than the baseline on any core metric or breaks an
    absolute bound (OPENCLAW_GATE_* settings), 0 with a verdict table when it passes."""
    from rich.console import Console

    from openclaw.settings import Settings
    from openclaw.sim.command import ALL_SCENARIOS, DEFAULT_SEEDS
    from openclaw.sim.validate import FAILED_EXIT
    from openclaw.sim.validate import Options as GateOptions
    from openclaw.sim.validate import run as run_gate

    try:
        options = GateOptions(
            candidate=candidate,
            baseline=baseline,
            trace=trace,
            fmt=fmt,
            scenarios=tuple(scenario) if scenario else ALL_SCENARIOS,
            seeds=tuple(seed) if seed else DEFAULT_SEEDS,
            amplify=amplify,
            train_fraction=train_fraction,
            json_path=json_path,
        )
        console = Console(width=None if sys.stdout.isatty() else 200)
        verdict = run_gate(options, settings=Settings(), argv=sys.argv, console=console)
    except (OpenClawError, ValueError, OSError) as exc:
        raise _fail("validate", exc) from exc
    if not verdict.passed:
        raise typer.Exit(FAILED_EXIT)


@bench_app.command("sim")
def bench_sim(
    *,
    trace: Annotated[Path, typer.Option(help="The trace replayed.")] = Path(
        "../shared/data/traces/nasa_19950801.tsv"
    ),
    fmt: Annotated[
        IngestFormat, typer.Option("--format", "-f", help="Its format (as `openclaw ingest`).")
    ] = "nasa-tsv",
    scenario: Annotated[str, typer.Option(help="The scenario injected.")] = "distributed",
    seed: Annotated[int, typer.Option(help="Its seed.")] = 0,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            help="Policy replayed (repeat) [default: none, static, static+gov, "
            "percentile+gov, oracle]."
        ),
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; each runs every contender.")] = 3,
    amplify: Annotated[
        int | None,
        typer.Option(min=1, help="Copies of the trace superposed [default: enough for 10/s]."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this file.")
    ] = None,
) -> None:
    """Replay speed in simulated requests per second of wall time, against the bare engine
    deciding the same requests in a plain loop. Target: a million per minute.

    Prints FAIL next to a missed target but exits 0: it is a report, not a gate.
    """
    from openclaw.bench.limiter import command_line
    from openclaw.bench.sim import DEFAULT_POLICIES as SIM_POLICIES
    from openclaw.bench.sim import Options as SimOptions
    from openclaw.bench.sim import run as run_sim

    options = SimOptions(
        trace=trace,
        fmt=fmt,
        scenario=scenario,
        seed=seed,
        policies=tuple(policy) if policy else SIM_POLICIES,
        rounds=rounds,
        amplify=amplify,
        json_path=json_path,
    )
    try:
        run_sim(options, command=command_line(sys.argv))
    except (OpenClawError, ValueError, OSError) as exc:
        raise _fail("bench sim", exc) from exc


# -- training: openclaw train | bench train --------------------------------------------------


@app.command("train")
def train(
    *,
    out: Annotated[
        Path,
        typer.Option(
            help="Directory the artifact is written into, as model-YYYYMMDD[-N] (the next "
            "free name of the day).",
            show_default=False,
        ),
    ],
    store: Annotated[
        str | None,
        typer.Option(help="Telemetry store URL (default: OPENCLAW_TELEMETRY_URL)."),
    ] = None,
    trace: Annotated[
        Path | None,
        typer.Option(
            help="Train on this access log instead of a store (ingested into a temporary "
            "DuckDB file first).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        IngestFormat, typer.Option("--format", "-f", help="With --trace: its format.")
    ] = "nasa-tsv",
    days: Annotated[
        float | None,
        typer.Option(
            min=0.0001, help="The last N days of the data (default: OPENCLAW_TRAIN_DAYS)."
        ),
    ] = None,
    head: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=1.0,
            help="Only the first share of the data's span, cut at a window boundary as "
            "`openclaw simulate --train-fraction` cuts (keeps the rest unseen for evaluation).",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Seed (default: OPENCLAW_TRAIN_SEED).")
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            min=1, help="Most passes over the data (default: OPENCLAW_TRAIN_EPOCHS, or automatic)."
        ),
    ] = None,
) -> None:
    """Train the bucket model on a telemetry store's last days (or a trace file): pairs of a
    client's window and its next one, a PyTorch network with a quantile loss, calibrated on a
    held-out slice; writes the artifact (weights, model.pt, manifest, learning curve) and
    prints the validation metrics."""
    from rich.console import Console

    from openclaw.model.train import TrainOptions, render_report, run_train
    from openclaw.settings import Settings

    if store is not None and trace is not None:
        raise typer.BadParameter("give --store or --trace, not both", param_hint="--trace")
    try:
        settings = Settings()
        options = TrainOptions(
            out=out,
            store_url=None if trace is not None else (store or settings.telemetry_url),
            trace=trace,
            fmt=fmt,
            days=days,
            head=head,
            seed=seed,
            epochs=epochs,
        )
        report = run_train(options, settings=settings, status_console=Console(stderr=True))
    except (OpenClawError, OSError) as exc:
        raise _fail("train", exc) from exc
    render_report(Console(width=None if sys.stdout.isatty() else 200), report)


@bench_app.command("train")
def bench_train(
    *,
    rows: Annotated[
        int, typer.Option(min=1000, help="(client, window) pairs to train on.")
    ] = 1_000_000,
    epochs: Annotated[
        int | None,
        typer.Option(min=1, help="Passes over the data (default: as openclaw train decides)."),
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; each runs every contender.")] = 1,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this file.")
    ] = None,
) -> None:
    """Training time for a million (client, window) pairs (synthetic rows with the feature
    schema), against the forward pass of the same network over the same rows (the floor any
    training pays). Target: under 60 s.

    Prints FAIL next to a missed target but exits 0: it is a report, not a gate.
    """
    from openclaw.bench.limiter import command_line
    from openclaw.bench.train import Options as TrainBenchOptions
    from openclaw.bench.train import run as run_train_bench

    options = TrainBenchOptions(rows=rows, epochs=epochs, rounds=rounds, json_path=json_path)
    try:
        run_train_bench(options, command=command_line(sys.argv))
    except (OpenClawError, OSError) as exc:
        raise _fail("bench train", exc) from exc


@bench_app.command("model")
def bench_model(
    *,
    clients: Annotated[int, typer.Option(min=100, help="Active clients.")] = 100_000,
    events: Annotated[
        int, typer.Option(min=1, help="Events per client in the window closed at the boundary.")
    ] = 10,
    repeats: Annotated[int, typer.Option(min=1, help="Timed batches per process.")] = 15,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; each runs every contender.")] = 2,
    part: Annotated[
        list[str] | None,
        typer.Option(help="Part to run (repeat) [default: inference, boundary, memory]."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this file.")
    ] = None,
) -> None:
    """The model in the service: inference for 100,000 clients in one batch (against the
    bare matrix products and torch; default threads and one), the window boundary (against
    the online features' close alone), and the memory of 100,000 active clients (against the
    static policy). Target: inference under 200 ms.

    Prints FAIL next to a missed target but exits 0: it is a report, not a gate.
    """
    from openclaw.bench.limiter import command_line
    from openclaw.bench.model import PARTS
    from openclaw.bench.model import Options as ModelBenchOptions
    from openclaw.bench.model import run as run_model_bench

    chosen = tuple(part) if part else PARTS
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        typer.echo(f"openclaw bench model: unknown part {', '.join(unknown)}", err=True)
        raise typer.Exit(2)
    options = ModelBenchOptions(
        clients=clients,
        events=events,
        repeats=repeats,
        rounds=rounds,
        parts=chosen,
        json_path=json_path,
    )
    try:
        run_model_bench(options, command=command_line(sys.argv))
    except (OpenClawError, OSError, RuntimeError) as exc:
        raise _fail("bench model", exc) from exc


@bench_app.command("report")
def bench_report(
    *,
    out: Annotated[Path, typer.Option("--out", help="The Markdown report to write.")] = Path(
        "docs/benchmarks.md"
    ),
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Shorten every benchmark (a check of the report, not figures)."
        ),
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this benchmark (repeat).")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write every figure to this file.")
    ] = None,
) -> None:
    """Every benchmark, one after the other (servers: throwaway Redis and ClickHouse), into
    one Markdown report: each figure beside its peer measured in the same run, the ratio,
    the target, the machine, the date, the commit and each benchmark's command. About 9
    minutes on a 2-core machine; --quick about one and a half.

    Exits 1 when a benchmark could not run (the report says why); a missed target is FAIL in
    the report and exit 0.
    """
    from openclaw.bench.report import Options as ReportOptions
    from openclaw.bench.report import run as run_report

    options = ReportOptions(out=out, quick=quick, only=tuple(only or ()), json_path=json_path)
    try:
        _, complete = run_report(options, command=options.command_line(), echo=typer.echo)
    except (OpenClawError, OSError) as exc:
        raise _fail("bench report", exc) from exc
    typer.echo(f"\nreport written to {out}")
    if not complete:
        typer.echo("openclaw bench report: some benchmarks did not run (see the report)", err=True)
        raise typer.Exit(1)


# -- the model registry: openclaw models | promote | rollback -------------------------------

models_app = typer.Typer(
    help="The model registry: versions, aliases, audit log, pruning. Alone: list the versions.",
    invoke_without_command=True,
)
app.add_typer(models_app, name="models")
# openclaw pipeline run | extract | train | validate | register | package | canary | status
app.add_typer(pipeline_app, name="pipeline")
RegistryOption = Annotated[
    Path | None,
    typer.Option(
        "--registry", help="Registry directory (default: OPENCLAW_MODEL_REGISTRY_PATH, ./models)."
    ),
]


@models_app.callback()
def models(ctx: typer.Context, registry: RegistryOption = None) -> None:
    """List the registered versions (verified), with their aliases and metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from openclaw.model.commands import open_registry, versions_table

    try:
        reg = open_registry(registry)
        Console(width=None if sys.stdout.isatty() else 200).print(
            versions_table(reg.version_infos(), root=reg.root)
        )
    except (OpenClawError, OSError) as exc:
        raise _fail("models", exc) from exc


@models_app.command("register")
def models_register(
    artifact: Annotated[Path, typer.Argument(help="A built artifact directory.")],
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")] = "",
    registry: RegistryOption = None,
) -> None:
    """Copy a built artifact in as a new immutable version; print the version.

    Checksums are verified first; the version is model-YYYYMMDD[-N], the next of the day."""
    from openclaw.model.commands import open_registry

    try:
        typer.echo(open_registry(registry).register(artifact, reason=reason))
    except (OpenClawError, OSError) as exc:
        raise _fail("models register", exc) from exc


@models_app.command("prune")
def models_prune(
    keep: Annotated[int, typer.Option(min=0, help="Newest versions to keep.")],
    dry_run: Annotated[bool, typer.Option(help="Only print what would be deleted.")] = False,
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")] = "",
    registry: RegistryOption = None,
) -> None:
    """Delete all but the newest --keep versions.

    Never an aliased version, nor the previous champion (the rollback target)."""
    from openclaw.model.commands import open_registry

    try:
        doomed = open_registry(registry).prune(keep=keep, reason=reason, dry_run=dry_run)
    except (OpenClawError, OSError) as exc:
        raise _fail("models prune", exc) from exc
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb}: {', '.join(doomed)}" if doomed else "nothing to delete")


@models_app.command("log")
def models_log(registry: RegistryOption = None) -> None:
    """The audit log: who moved which alias from what to what, when and why."""
    from rich.console import Console

    from openclaw.model.commands import audit_table, open_registry

    try:
        entries = open_registry(registry).audit_log()
    except (OpenClawError, OSError) as exc:
        raise _fail("models log", exc) from exc
    Console(width=None if sys.stdout.isatty() else 200).print(audit_table(entries))


@app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="The version, e.g. model-20250801-2.")],
    reason: Annotated[str, typer.Option(help="Why (required; goes to the audit log).")],
    alias: Annotated[str, typer.Option(help="champion or challenger.")] = "champion",
    registry: RegistryOption = None,
) -> None:
    """Point an alias (champion, challenger) at a version; logged in the audit log.

    The version is verified first; a service follows the champion alias."""
    from openclaw.model.commands import describe_change, open_registry

    try:
        change = open_registry(registry).promote(version, alias=alias, reason=reason)
    except (OpenClawError, OSError) as exc:
        raise _fail("promote", exc) from exc
    typer.echo(describe_change(change))


@app.command("rollback")
def rollback(
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")] = "",
    registry: RegistryOption = None,
) -> None:
    """Return the champion to the previous champion; logged in the audit log.

    Rolling back twice goes two promotions back."""
    from openclaw.model.commands import describe_change, open_registry

    try:
        change = open_registry(registry).rollback(reason=reason)
    except (OpenClawError, OSError) as exc:
        raise _fail("rollback", exc) from exc
    typer.echo(describe_change(change))


canary_app = typer.Typer(
    help="The model canary of a running service (admin API): start, status, abort.",
    no_args_is_help=True,
)
app.add_typer(canary_app, name="canary")
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="The service [default: http://OPENCLAW_HTTP_HOST:OPENCLAW_HTTP_PORT]."
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Admin bearer token [default: OPENCLAW_ADMIN_TOKEN]. Prefer the variable: a "
        "command line is visible to other users of the machine.",
        show_default=False,
    ),
]


def _canary_call(command: str, url: str | None, token: str | None, action: str, **kw: Any) -> None:
    from rich.console import Console

    from openclaw.rollout.client import CanaryClient, render_status
    from openclaw.settings import Settings

    try:
        settings = Settings()
        secret = token or (
            settings.admin_token.get_secret_value() if settings.admin_token is not None else ""
        )
        base = url or f"http://{settings.http_host}:{settings.http_port}"
        client = CanaryClient(base, secret)
        body = getattr(client, action)(**kw)
    except (OpenClawError, ValueError) as exc:
        raise _fail(command, exc) from exc
    render_status(Console(), body)


@canary_app.command("start")
def canary_start(
    version: Annotated[
        str | None, typer.Argument(help="The version [default: the registry's challenger].")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (in the canary's history).")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Start a canary: shadow first, then a growing slice of clients, then promotion (or
    rollback when failed analyses reach the threshold)."""
    _canary_call("canary start", url, token, "start", version=version, reason=reason)


@canary_app.command("status")
def canary_status(url: UrlOption = None, token: TokenOption = None) -> None:
    """The champion, the canary's phase, weight, failed checks, last analysis and history."""
    _canary_call("canary status", url, token, "status")


@canary_app.command("abort")
def canary_abort(
    reason: Annotated[str, typer.Option(help="Why (in the canary's history).")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Stop the canary now: the champion serves everyone, the challenger alias is cleared."""
    _canary_call("canary abort", url, token, "abort", reason=reason)
