"""Running the ``openclaw`` command in-process, as the CLI tests do."""

from __future__ import annotations

from collections.abc import Mapping

from typer.testing import CliRunner

from openclaw.cli import app

_runner = CliRunner()


def invoke(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """``openclaw ARGS...``: its exit code, stdout and stderr. An exception the command did
    not turn into an exit code is raised, so a test fails on the bug, not on an exit code."""
    result = _runner.invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr
