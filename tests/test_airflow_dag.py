"""The retraining DAG (deploy/airflow/dags/openclaw_retrain.py) under a real Airflow 3.

Airflow cannot share ``.venv`` (its pins fight ours), so scripts/setup makes ``.venv-airflow`` and
these tests run tests/airflow_probe.py there, in a subprocess, with AIRFLOW_HOME in a temporary
directory. Parsing needs no database; running the DAG (``dag.test()``) uses SQLite in that
directory. The pipeline itself is someone else's test: here ``openclaw`` is a script that records
how it was called, so the DAG's wiring is what is under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "deploy" / "airflow" / "dags"
DAG_FILE = DAGS / "openclaw_retrain.py"
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
PROBE = Path(__file__).resolve().parent / "airflow_probe.py"

DAG_ID = "openclaw_retrain"
STEPS = ("extract", "train", "validate", "register", "package", "canary")
RUN_AFTER = "2026-11-28T00:00:00+00:00"
RUN_ID = "airflow-20261128T000000"
WORKDIR = "{{ var.value.get('openclaw_workdir', '/var/lib/openclaw') }}"


def airflow_env(home: Path, dags: Path, **extra: str) -> dict[str, str]:
    # Nothing of a developer's own Airflow set-up may leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **extra,
    }


def probe(*args: str, env: dict[str, str]) -> Any:
    assert (AIRFLOW_BIN / "python").exists(), "no .venv-airflow: run ./scripts/setup"
    out = subprocess.run(
        [str(AIRFLOW_BIN / "python"), str(PROBE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def problems(parsed: dict[str, Any], dag_id: str = DAG_ID) -> list[str]:
    """What is wrong with one DAG of a parsed folder, against the pipeline it must run."""
    dag = parsed["dags"].get(dag_id)
    if dag is None:
        return [f"no DAG {dag_id}"]
    found = []
    if (dag["schedule"], dag["cron"]) != ("@daily", "0 0 * * *"):
        found.append(f"schedule {dag['schedule']} ({dag['cron']}), not daily")
    if dag["catchup"] is not False:
        found.append("catchup is on")
    tasks = dag["tasks"]
    if tuple(t["task_id"] for t in tasks) != STEPS:
        found.append(f"tasks in order {[t['task_id'] for t in tasks]}, not {list(STEPS)}")
    for previous, task, step in zip((None, *STEPS), tasks, STEPS, strict=False):
        # A chain: each step waits for the one before it, and for nothing else.
        if task["upstream"] != ([previous] if previous else []):
            found.append(f"{task['task_id']} waits for {task['upstream']}")
        if task["operator"] != "_BashDecoratedOperator":
            found.append(f"{task['task_id']} is a {task['operator']}, not @task.bash")
        if task["rendered"] != f"openclaw pipeline {step} --run {RUN_ID}":
            found.append(f"{task['task_id']} runs {task['rendered']!r}")
        # One directory for every step, so relative settings name the same files in each.
        if task["cwd"] != WORKDIR:
            found.append(f"{task['task_id']} runs in {task['cwd']}")
        # A rejected model stays rejected: retrying the gate only delays the failure.
        wanted_retries = task["retries"] == 0 if step == "validate" else task["retries"] > 0
        if not wanted_retries:
            found.append(f"{task['task_id']} has {task['retries']} retries")
    return found


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow-home")
    parsed: dict[str, Any] = probe("parse", str(DAGS), RUN_AFTER, env=airflow_env(home, DAGS))
    return parsed


def test_the_dag_folder_parses_without_import_errors(parsed: dict[str, Any]) -> None:
    assert parsed["import_errors"] == {}
    assert list(parsed["dags"]) == [DAG_ID]


def test_the_dag_runs_each_pipeline_step_in_order_daily(parsed: dict[str, Any]) -> None:
    assert problems(parsed) == []
    dag = parsed["dags"][DAG_ID]
    assert dag["max_active_runs"] == 1
    # The pipeline's settings come from the worker's OPENCLAW_* variables, not from the DAG.
    assert [t["command"].split(" --run ")[0] for t in dag["tasks"]] == [
        f"openclaw pipeline {step}" for step in STEPS
    ]


def mutate(source: str, old: str, new: str) -> str:
    assert old in source, f"{old!r} is no longer in {DAG_FILE.name}: update this test"
    return source.replace(old, new)


def test_broken_dags_are_caught(tmp_path: Path) -> None:
    """The checks above can fail: copies of the DAG, each broken in one way, are each caught."""
    source = DAG_FILE.read_text()
    renamed = {
        name: mutate(source, f'dag_id="{DAG_ID}"', f'dag_id="{name}"')
        for name in ("gate_skipped", "wrong_command", "hourly")
    }
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "bad_import.py").write_text(
        mutate(source, "from airflow.sdk import dag, task", "from airflow.sdk import dag, tsak")
    )
    (folder / "gate_skipped.py").write_text(
        mutate(renamed["gate_skipped"], "train >> validate >> register", "train >> register")
    )
    (folder / "wrong_command.py").write_text(
        mutate(renamed["wrong_command"], "openclaw pipeline {step}", "openclaw {step}")
    )
    (folder / "hourly.py").write_text(mutate(renamed["hourly"], '"@daily"', '"@hourly"'))

    result: dict[str, Any] = probe(
        "parse", str(folder), RUN_AFTER, env=airflow_env(tmp_path / "home", folder)
    )

    assert list(result["import_errors"]) == [str(folder / "bad_import.py")]
    assert "tsak" in result["import_errors"][str(folder / "bad_import.py")]
    assert problems(result) == [f"no DAG {DAG_ID}"]
    skipped = problems(result, "gate_skipped")
    assert "register waits for ['train']" in skipped
    assert "validate waits for []" in skipped
    assert problems(result, "wrong_command") == [
        f"{step} runs 'openclaw {step} --run {RUN_ID}'" for step in STEPS
    ]
    assert problems(result, "hourly") == ["schedule @hourly (0 * * * *), not daily"]


@pytest.mark.slow
def test_a_dag_run_stops_at_the_gate_and_otherwise_runs_every_step(tmp_path: Path) -> None:
    """Two real DAG runs (Airflow's dag.test()): the gate rejects the model of the first, the
    second goes through."""
    home = tmp_path / "home"
    calls = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "openclaw"
    workdir = tmp_path / "work"
    workdir.mkdir()
    # Records each call with its directory and a setting it was given; `validate` fails for
    # the first run only.
    stub.write_text(
        "#!/bin/sh\n"
        'echo "$* $(pwd) $OPENCLAW_TELEMETRY_URL" >> "$CALLS"\n'
        f'if [ "$2 $4" = "validate {RUN_ID}" ]; then echo "gate: worse" >&2; exit 1; fi\n'
    )
    stub.chmod(0o755)
    env = airflow_env(
        home,
        DAGS,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        CALLS=str(calls),
        OPENCLAW_TELEMETRY_URL="duckdb:///srv/telemetry.duckdb",
        AIRFLOW_VAR_OPENCLAW_WORKDIR=str(workdir),
    )
    migrate = subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    second = "2026-11-29T00:00:00+00:00"
    failed, passed = probe("run", str(DAGS), DAG_ID, RUN_AFTER, second, env=env)

    assert failed["state"] == "failed"
    assert failed["tasks"] == {
        "extract": "success",
        "train": "success",
        "validate": "failed",
        "register": "upstream_failed",
        "package": "upstream_failed",
        "canary": "upstream_failed",
    }
    assert passed["state"] == "success"
    assert passed["tasks"] == dict.fromkeys(STEPS, "success")
    # One pipeline run id per DAG run, one working directory (the Variable's), and the
    # worker's OPENCLAW_* settings reach the steps.
    assert calls.read_text().splitlines() == [
        f"pipeline {step} --run {run} {workdir} duckdb:///srv/telemetry.duckdb"
        for run, steps in ((RUN_ID, STEPS[:3]), ("airflow-20261129T000000", STEPS))
        for step in steps
    ]


def test_the_default_test_command_runs_this_group() -> None:
    """`.venv/bin/python -m pytest` (the README's, .ci/run's) selects the airflow marker's tests:
    the marker is registered and no default option deselects it."""
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", str(Path(__file__))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    ours = sorted(name for name in globals() if name.startswith("test_"))
    listed = sorted(line.split("::")[-1] for line in collected.stdout.splitlines() if "::" in line)
    assert listed == ours
