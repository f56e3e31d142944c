"""The project as a newcomer meets it: the README's quickstart, the CLI, lint and types."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

import openclaw
from openclaw.testing.redis import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def quickstart() -> list[str]:
    """The commands of the README's quickstart block, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the quickstart has no ```sh block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def run(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_quickstart_is_set_up_test_and_main_job() -> None:
    commands = quickstart()
    assert len(commands) == 3, commands
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    # CI runs exactly the README's set-up and test commands.
    assert commands[0] in ci
    assert commands[1] in ci
    assert "pytest" in commands[1]


def test_the_main_job_runs_on_embedded_defaults() -> None:
    """The README's third command, exactly, on a free port given through the environment."""
    command = quickstart()[2].split()
    assert command == [".venv/bin/openclaw", "serve"]
    port = free_port()
    env = {**os.environ, "OPENCLAW_HTTP_PORT": str(port)}
    proc = subprocess.Popen([str(BIN / "openclaw"), *command[1:]], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "openclaw serve exited"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "openclaw serve never answered"
                time.sleep(0.1)
        assert health.status_code == 200
        decision = httpx.get(f"http://127.0.0.1:{port}/api/v1/rate", params={"client_id": "a"})
        assert decision.status_code == 200
        assert decision.json()["allowed"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_cli_version() -> None:
    result = run(BIN / "openclaw", "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"openclaw {openclaw.__version__}"


def test_cli_rejects_unknown_commands_with_a_message() -> None:
    result = run(BIN / "openclaw", "frobnicate")
    assert result.returncode != 0
    assert "frobnicate" in result.stderr


def test_help_shows_the_defaults_the_options_document() -> None:
    # "[default: ...]" in an option's help must reach the user, not be read as markup.
    result = run(BIN / "openclaw", "serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "[default: OPENCLAW_HTTP_PORT, 8080]" in text
    canary = " ".join(run(BIN / "openclaw", "canary", "start", "--help").stdout.split())
    assert "[default: the registry's challenger]" in canary


def test_ruff_is_clean() -> None:
    lint = run(sys.executable, "-m", "ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_is_clean() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
