"""The ``openclaw`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from openclaw import __version__

app = typer.Typer(
    name="openclaw",
    help="Rate limiting whose limits learn.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks against peers measured in the same run.", no_args_is_help=True)
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
