"""CI for users (.github/workflows/ci.yml) runs what our CI (.ci/run) runs, and nothing else.

The workflow's test job is compared with .ci/run line by line, so the two cannot drift apart;
the file is checked against GitHub's workflow schema (check-jsonschema's vendored copy).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
CI_RUN = ROOT / ".ci" / "run"
SCHEMA = "vendor.github-workflows"

# How .ci/run begins: strict bash, then the repository's root as the working directory. The
# workflow has both through its defaults (bash runs with -e -o pipefail on GitHub).
PREAMBLE = ("set -euo pipefail", 'cd "$(dirname "$0")/.."')


def command_lines(script: str) -> list[str]:
    """A script's lines that do something: no blank lines, no comments."""
    lines = (line.strip() for line in script.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def ci_run_commands() -> list[str]:
    lines = command_lines(CI_RUN.read_text())
    assert tuple(lines[: len(PREAMBLE)]) == PREAMBLE, lines
    return lines[len(PREAMBLE) :]


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def job_of(flow: dict[Any, Any]) -> dict[str, Any]:
    job: dict[str, Any] = flow["jobs"]["test"]
    return job


def test_the_test_job_runs_exactly_what_ci_run_runs() -> None:
    job = job_of(workflow())
    run_lines = [
        line for step in job["steps"] if "run" in step for line in command_lines(step["run"])
    ]
    assert run_lines == ci_run_commands()
    assert run_lines[-1] == ".venv/bin/python -m pytest"
    # Everything else is a checkout: no step of the job does what .ci/run does not.
    others = [step["uses"] for step in job["steps"] if "run" not in step]
    assert others == ["actions/checkout@v6", "actions/checkout@v6"]


def test_the_test_job_runs_in_the_repository_beside_the_shared_traces() -> None:
    job = job_of(workflow())
    assert job["defaults"]["run"] == {"shell": "bash", "working-directory": "openclaw"}
    repo, shared = (step["with"] for step in job["steps"] if "run" not in step)
    assert repo == {"path": "openclaw"}
    # src/openclaw/testing/traces.py looks for ../shared/data/traces from the repository.
    assert shared["path"] == "shared"
    assert shared["sparse-checkout"] == "data/traces"
    assert "OPENCLAW_SHARED_REPOSITORY" in shared["repository"]
    traces = (ROOT / "src" / "openclaw" / "testing" / "traces.py").read_text()
    assert '.parent / "shared" / "data" / "traces"' in traces


def test_the_test_job_runs_on_debian_12_with_python_311_as_root() -> None:
    job = job_of(workflow())
    # python:3.11-bookworm runs as root: scripts/setup's apt-get needs no sudo there.
    assert job["container"]["image"] == "python:3.11-bookworm"
    # As long as our CI may take (.ci/run has 90 minutes).
    assert job["timeout-minutes"] == 90


def test_the_workflow_runs_on_pushes_and_pull_requests_with_read_only_access() -> None:
    flow = workflow()
    # YAML 1.1 reads the key `on` as the boolean true.
    triggers = flow["on"] if "on" in flow else flow[True]
    assert set(triggers) == {"push", "pull_request", "workflow_dispatch"}
    assert flow["permissions"] == {"contents": "read"}


def test_the_lint_job_installs_ruff_as_the_dev_extra_pins_it() -> None:
    steps = workflow()["jobs"]["lint"]["steps"]
    install = next(step["run"] for step in steps if "pip install" in step.get("run", ""))
    specs = re.findall(r"'([^']+)'", install)
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [spec for spec in specs if spec.startswith("ruff")] == ["ruff>=0.5"]
    assert "ruff>=0.5" in dev["dev"]
    runs = [step["run"] for step in steps if "run" in step]
    assert runs[1:] == ["ruff check .", "ruff format --check .", "actionlint"]


# Mistakes GitHub would reject, each with what the schema says about it; None: the file itself.
MISTAKES = {
    "as written": None,
    "runs-on misspelt": (
        "runs-on: ubuntu-24.04",
        "runs_on: ubuntu-24.04",
        "'runs-on' is a required",
    ),
    "working-directory misspelt": (
        "working-directory: openclaw",
        "working_directory: openclaw",
        "'working_directory' was unexpected",
    ),
    "a step with neither run nor uses": (
        "      - run: actionlint",
        "      - rn: actionlint",
        "$.jobs.lint.steps[5]: 'uses' is a required property",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_the_workflow_matches_githubs_schema(tmp_path: Path, mistake: str) -> None:
    text = WORKFLOW.read_text()
    change = MISTAKES[mistake]
    if change is not None:
        assert change[0] in text, f"{change[0]!r} is no longer in ci.yml: update this test"
        text = text.replace(change[0], change[1], 1)
    path = tmp_path / "ci.yml"
    path.write_text(text)
    check = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", SCHEMA, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if change is None:
        assert check.returncode == 0, check.stdout + check.stderr
    else:
        assert check.returncode == 1, check.stdout + check.stderr
        assert change[2] in check.stdout
