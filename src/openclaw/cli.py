"""The ``openclaw`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from openclaw import __version__
from openclaw.bench import LIMITER_DURATION_S, LIMITER_ROUNDS
from openclaw.errors import OpenClawError

app = typer.Typer(
    name="openclaw",
    help="Rate limiting whose limits learn.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    help="Benchmarks against peers measured in the same run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


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
        typer.echo(f"openclaw bench limiter: {exc}", err=True)
        raise typer.Exit(2) from exc


@bench_app.command("grpc")
def bench_grpc(
    rate: Annotated[float, typer.Option(min=1, help="ShouldRateLimit calls per second.")] = 2000,
    seconds: Annotated[float, typer.Option(min=0.5, help="Seconds of load per round.")] = 3.0,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; each runs every contender.")] = 3,
    redis: Annotated[
        str, typer.Option(help="none, auto (a throwaway redis-server), or a redis:// URL.")
    ] = "auto",
) -> None:
    """Envoy's ShouldRateLimit latency at a fixed rate, against a bare gRPC servicer."""
    from openclaw.bench.grpc import run as run_grpc
    from openclaw.bench.limiter import command_line

    try:
        run_grpc(
            rate=rate, seconds=seconds, rounds=rounds, redis=redis, command=command_line(sys.argv)
        )
    except OpenClawError as exc:
        typer.echo(f"openclaw bench grpc: {exc}", err=True)
        raise typer.Exit(2) from exc


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
        typer.echo(f"openclaw bench http: {exc}", err=True)
        raise typer.Exit(2) from exc


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
        typer.echo(f"openclaw serve: {exc}", err=True)
        raise typer.Exit(2) from exc
